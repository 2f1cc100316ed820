"""The paid invoice lines of the `1y` cohort, kept from one day to the next.

The cohort is the customers paying at the start of the UTC day a year ago
(source._year_ago_mrr). The lines that can say so are those of the paid
invoices created from 366 days before that moment to a day after it
(fetch.invoices_covering): a year of invoices, most of a first poll's
requests. The moment then moves a day each day, so what is kept is each line
that can cover it or a later moment (its period ends after it), with its
invoice's creation time, and a new day lists only the invoices created since
the last read. Lines created before the new moment's year, or ended by it, are
dropped: the lines handed out are a fresh read's, give or take lines that do
not cover the moment (history.billed_lines reads only those that do).
"""

from __future__ import annotations

from exporter.http import HttpClient
from exporter.sources.stripe import fetch
from exporter.sources.stripe.records import InvoiceLine


class CohortLines:
    def __init__(self) -> None:
        self._kept: list[tuple[int, InvoiceLine]] = []  # (invoice created, line)
        self._listed: tuple[int, int] | None = None  # the creation range read

    def at(self, client: HttpClient, moment: int) -> list[InvoiceLine]:
        """The paid invoice lines that may cover `moment` (and none that a fresh read
        of its invoices would not give)."""
        created_from, created_to = fetch.invoices_covering(moment, moment)
        read = self._listed
        if read is not None and read[0] <= created_from and created_from <= read[1] <= created_to:
            start, kept = read[1] + 1, self._kept  # moving forward: the new days only
        else:
            start, kept = created_from, []
        new = [(created, line) for created, lines in fetch.paid_invoices(client, start, created_to)
               for line in lines if _may_cover(line, moment)]  # a year of lines: filter as read
        # Only once all of it was read: a failure keeps what was held.
        self._kept = [(created, line) for created, line in kept
                      if created >= created_from and _may_cover(line, moment)] + new
        self._listed = (created_from, created_to)
        return [line for _, line in self._kept]


def _may_cover(line: InvoiceLine, moment: int) -> bool:
    """Whether a line can say what was billed at `moment` or later (history.billed_lines
    leaves prorations out)."""
    return line.period_end > moment and not line.proration
