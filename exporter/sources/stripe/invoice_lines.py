"""Invoice lines kept as columns, each with its invoice's creation time.

The `1y` cohort keeps a year of paid invoice lines from one day to the next
(cohort.py): about half a million at a million subscriptions. Held as
InvoiceLine records each was an object, two ints for its period and a Decimal
for its amount, some 260 bytes; here a line is a row of columns, the times and
the amount (whole minor units, as Stripe sends them) in arrays: 73 bytes. The
strings are interned where parsed (parse.parse_invoice_lines), so a row shares
them with the other rows that name the same customer, price or subscription
(and its customer's with the subscriptions' records). An InvoiceLine is made
only for a row asked for (`line`).
"""

from __future__ import annotations

from array import array
from decimal import Decimal
from typing import Callable, Iterable, Iterator

from exporter.sources.stripe.records import InvoiceLine


class InvoiceLines:
    def __init__(self, rows: Iterable[tuple[int, InvoiceLine]] = ()) -> None:
        self.created = array("q")  # the invoice's creation time
        self.customer: list[str] = []
        self.currency: list[str] = []
        self.amount = array("q")
        self.period_start = array("q")
        self.period_end = array("q")
        self.price_id: list[str | None] = []
        self.proration = bytearray()
        self.subscription: list[str | None] = []
        self.subscription_item: list[str | None] = []
        for created, line in rows:
            self.add(created, line)

    def add(self, created: int, line: InvoiceLine) -> None:
        amount = int(line.amount)
        if amount != line.amount:  # parse_invoice_lines makes whole minor units only
            raise ValueError(f"invoice line amount {line.amount} is not whole minor units")
        self.created.append(created)
        self.customer.append(line.customer)
        self.currency.append(line.currency)
        self.amount.append(amount)
        self.period_start.append(line.period_start)
        self.period_end.append(line.period_end)
        self.price_id.append(line.price_id)
        self.proration.append(line.proration)
        self.subscription.append(line.subscription)
        self.subscription_item.append(line.subscription_item)

    def __len__(self) -> int:
        return len(self.created)

    def line(self, row: int) -> InvoiceLine:
        return InvoiceLine(self.customer[row], self.currency[row], Decimal(self.amount[row]),
                           self.period_start[row], self.period_end[row], self.price_id[row],
                           bool(self.proration[row]), self.subscription[row],
                           self.subscription_item[row])

    def __iter__(self) -> Iterator[tuple[int, InvoiceLine]]:
        return ((self.created[row], self.line(row)) for row in range(len(self)))

    def rows(self, keep: Callable[[int], bool]) -> "InvoiceLines":
        """The rows `keep(row)` is true of, in their order."""
        kept = [row for row in range(len(self)) if keep(row)]
        result = InvoiceLines()
        for name in _COLUMNS:
            column = getattr(self, name)
            getattr(result, name).extend([column[row] for row in kept])
        return result


_COLUMNS = ("created", "customer", "currency", "amount", "period_start", "period_end",
            "price_id", "proration", "subscription", "subscription_item")
