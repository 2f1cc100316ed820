"""The paid invoice lines of the `1y` cohort, kept from one day to the next.

The cohort is the customers paying at the start of the UTC day a year ago
(source._year_ago_mrr). The lines that can say so are those of the paid
invoices created from 366 days before that moment to a day after it
(fetch.invoices_covering): a year of invoices, some 4.5 pages per 100
subscriptions. That read is spread over polls, at most `max_pages` pages each
(what is left of the poll's source.HISTORY_PAGES_PER_POLL once the month of
events is read; the cohort's series are absent until it is complete), so a
large account's first poll is its subscriptions, not a year of invoices.

The moment then moves a day each day, so what is kept is each line that can
cover it or a later moment (its period ends after it), with its invoice's
creation time, and a new day lists only the invoices created since the last
read. Lines created before the new moment's year, or ended by it, are dropped:
the lines handed out are a fresh read's, give or take lines that do not cover
the moment (history.billed_lines reads only those that do). They are kept as
columns (invoice_lines.py): a large account's year is half a million lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from exporter.http import HttpClient
from exporter.sources.stripe import fetch
from exporter.sources.stripe.invoice_lines import InvoiceLines
from exporter.sources.stripe.records import InvoiceLine

log = logging.getLogger(__name__)


@dataclass
class _Reading:
    """A year of invoices being read, newest first, over several polls."""

    created_from: int
    created_to: int
    after: str | None = None  # the last invoice read
    lines: InvoiceLines = field(default_factory=InvoiceLines)
    invoices: int = 0

    def advance(self, client: HttpClient, moment: int, max_pages: int | None) -> bool:
        """Read on, at most `max_pages` pages; whether the read is complete."""
        if max_pages == 0:
            return False  # the poll has read all the history it may
        started = self.invoices
        for invoice_id, created, lines in fetch.paid_invoices(
                client, self.created_from, self.created_to, self.after):
            _add_covering(self.lines, created, lines, moment)
            self.after, self.invoices = invoice_id, self.invoices + 1
            if max_pages is not None and self.invoices - started >= max_pages * fetch.PAGE_SIZE:
                log.info("stripe: the 1y cohort's invoices: %d read, more at the next poll",
                         self.invoices)
                return False
        return True


class CohortLines:
    def __init__(self) -> None:
        self._kept = InvoiceLines()
        self._listed: tuple[int, int] | None = None  # the creation range read
        self._reading: _Reading | None = None

    def at(self, client: HttpClient, moment: int, max_pages: int | None) -> InvoiceLines | None:
        """The paid invoice lines that may cover `moment` (and none that a fresh read
        of its invoices would not give), or None while a year of them is still
        being read (`max_pages` a call; None: all at once)."""
        created_from, created_to = fetch.invoices_covering(moment, moment)
        if self._reading is None and not self._moves_on(created_from, created_to):
            self._reading = _Reading(created_from, created_to)  # first, or not moving forward
        if self._reading is not None:
            if not self._reading.advance(client, moment, max_pages):
                return None
            reading, self._reading = self._reading, None
            self._kept, self._listed = reading.lines, (reading.created_from, reading.created_to)
            if not self._moves_on(created_from, created_to):  # the clock went back meanwhile
                self._reading = _Reading(created_from, created_to)
                return None
        assert self._listed is not None
        start = self._listed[1] + 1  # the days since the last read (none on the day of it)
        held = self._kept
        kept = held.rows(lambda row: held.created[row] >= created_from and _may_cover(
            held.period_end[row], held.proration[row], moment))
        if start <= created_to:  # a day or so of lines, filtered as read
            for _, created, lines in fetch.paid_invoices(client, start, created_to):
                _add_covering(kept, created, lines, moment)
        # Only once all of it was read: a failure keeps what was held.
        self._kept, self._listed = kept, (created_from, created_to)
        return self._kept

    def _moves_on(self, created_from: int, created_to: int) -> bool:
        """Whether the range read reaches into this one from before (so a read of the
        days since, and dropping the days before, gives this one)."""
        read = self._listed
        return read is not None and read[0] <= created_from <= read[1] <= created_to


def _add_covering(kept: InvoiceLines, created: int, lines: list[InvoiceLine],
                  moment: int) -> None:
    for line in lines:
        if _may_cover(line.period_end, line.proration, moment):
            kept.add(created, line)


def _may_cover(period_end: int, proration: bool, moment: int) -> bool:
    """Whether a line can say what was billed at `moment` or later (history.billed_lines
    leaves prorations out)."""
    return period_end > moment and not proration
