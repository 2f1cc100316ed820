"""Payments around the invoices: charges for invoice payment attempts, refunds, disputes.

Faithful (dahlia shapes): refunds (`re_`) and disputes (`dp_`) as in Stripe's
fixtures; a refund raises its charge's `amount_refunded` (and `refunded` once
whole), a dispute sets the charge's `disputed`. Open dispute statuses are
`warning_needs_response`, `warning_under_review` (inquiries), `needs_response`,
`under_review`; closed ones `won`, `lost`, `warning_closed`.

Statuses move on later (`settle_charge`, `update_refund`, `update_dispute`: a
pending refund succeeds or fails at the bank, a dispute is answered, then won
or lost), each change recorded as the events Stripe sends for it (kept as
rendered in `store.stored_events`, listed with the subscriptions' events):
`charge.succeeded`/`charge.failed`; `refund.updated` and `charge.refund.updated`
(and `refund.failed`); `charge.dispute.updated`, or `charge.dispute.closed`.

Invoices of `send_invoice` subscriptions are paid by transfer and have no
charges. Simplified: charges are stored objects (the generator makes them for the
invoices of the last 30 days, the ticker as payments happen) and carry no
invoice link; a failed attempt is one charge with Stripe's failure codes; no
balance transactions are listed on disputes.
"""

from __future__ import annotations

import copy
import random
from typing import TYPE_CHECKING, Any

from exporter.simulator import invoices
from exporter.simulator.history import API_VERSION
from exporter.simulator.periods import DAY, stable_id, stable_int

if TYPE_CHECKING:  # pragma: no cover
    from exporter.simulator.stripe_store import StripeStore

# (failure_code, decline_code) weights for failed charges.
FAILURE_WEIGHTS = {
    ("card_declined", "generic_decline"): 38,
    ("card_declined", "insufficient_funds"): 30,
    ("expired_card", None): 15,
    ("card_declined", "do_not_honor"): 6,
    ("incorrect_cvc", None): 5,
    ("processing_error", None): 6,
}
OPEN_DISPUTE_STATUSES = ("warning_needs_response", "warning_under_review", "needs_response",
                         "under_review")
CLOSED_DISPUTE_STATUSES = ("won", "lost", "warning_closed")
REFUND_STATUSES = ("succeeded", "pending", "failed", "canceled", "requires_action")
_NETWORK_REASON = {"fraudulent": "10.4", "product_not_received": "13.1", "duplicate": "12.6.1",
                   "subscription_canceled": "13.2", "credit_not_processed": "13.6",
                   "general": "13.3", "unrecognized": "10.4"}


def pick_failure(rng: random.Random) -> tuple[str, str | None]:
    keys = list(FAILURE_WEIGHTS)
    return rng.choices(keys, weights=list(FAILURE_WEIGHTS.values()))[0]


def paid_by_transfer(store: "StripeStore", tl: Any, at: int) -> bool:
    """Invoices sent to the customer (`send_invoice`) are paid by bank transfer:
    Stripe makes no card charge for them, so neither a failed nor a paid one."""
    st = store.state_at(tl.id, at)
    return st is not None and st.collection_method == "send_invoice"


def invoice_charges(store: "StripeStore", lo: int, hi: int) -> list[dict]:
    """`add_charge` arguments for every payment attempt on an invoice with lo < t <= hi:
    a failed charge per failed attempt, a succeeded one when it is paid (deterministic)."""
    out = []
    for tl in store.timelines.values():
        for rec in invoices.records(store, tl):
            if rec.attempt > hi:
                break
            if max(rec.attempt + invoices.RETRY_OFFSETS[-1], rec.paid_at or 0) <= lo:
                continue
            times = [x for x in invoices.attempts(rec, hi) if lo < x <= hi]
            if not times:
                continue
            total = invoices.invoice_total(store, tl, rec)
            if total <= 0 or paid_by_transfer(store, tl, rec.t):
                continue
            description = ("Subscription creation" if rec.point.reason == "subscription_create"
                           else "Subscription update")
            for x in times:
                kwargs: dict[str, Any] = dict(customer=tl.customer, amount=total,
                                              currency=tl.currency, created=x,
                                              description=description)
                if x != rec.paid_at:
                    code, decline = pick_failure(random.Random(stable_int(rec.id, x)))
                    kwargs.update(status="failed", failure_code=code, decline_code=decline)
                out.append(kwargs)
    out.sort(key=lambda c: c["created"])
    return out


class Payments:
    """Mixin of StripeStore: refunds and disputes of its charges."""

    def add_refund(self, charge: Any, amount: int | None = None, *, created: int | None = None,
                   reason: str | None = "requested_by_customer", status: str = "succeeded",
                   metadata: dict | None = None, id: str | None = None) -> dict:
        """A refund of a succeeded charge (whole by default); updates the charge."""
        with self._lock:
            ch = self._resolve("charges", charge, "charge")
            if ch["status"] != "succeeded":
                raise ValueError(f"charge {ch['id']} is {ch['status']}: only succeeded charges refund")
            if status not in REFUND_STATUSES:
                raise ValueError(f"unknown refund status {status!r}")
            left = ch["amount"] - ch["amount_refunded"]
            amount = left if amount is None else int(amount)
            if not 0 < amount <= left:
                raise ValueError(f"charge {ch['id']} has {left} left to refund, not {amount}")
            created = self.now if created is None else int(created)
            refund = {
                "id": id or self.new_id("re", "refunds"),
                "object": "refund",
                "amount": amount,
                "balance_transaction": self.new_id("txn") if status == "succeeded" else None,
                "charge": ch["id"],
                "created": created,
                "currency": ch["currency"],
                "customer": None,
                "customer_account": None,
                "destination_details": {
                    "card": {"reference": str(stable_int(ch["id"], created))[:12],
                             "reference_status": "available" if status == "succeeded" else "pending",
                             "reference_type": "acquirer_reference_number", "type": "refund"},
                    "type": "card",
                },
                "metadata": dict(metadata or {}),
                "payment_intent": ch["payment_intent"],
                "payment_method": ch["payment_method"],
                "reason": reason,
                "receipt_number": None,
                "source_transfer_reversal": None,
                "status": status,
                "transfer_reversal": None,
            }
            if status == "failed":
                refund["failure_reason"] = "expired_or_canceled_card"
            self.add("refunds", refund)
            if status in ("succeeded", "pending"):
                self._refund_on_charge(ch, amount)
            return refund

    def _refund_on_charge(self, charge: dict, amount: int) -> None:
        """The charge's `amount_refunded` moved by `amount` (negative: given back)."""
        refunded = charge["amount_refunded"] + amount
        self._replace("charges", {**charge, "amount_refunded": refunded,
                                  "refunded": refunded >= charge["amount"]})

    def settle_charge(self, charge: Any, status: str, *, at: int | None = None) -> dict:
        """A pending charge succeeds or fails (`charge.succeeded`, `charge.failed`)."""
        with self._lock:
            old = self._resolve("charges", charge, "charge")
            if old["status"] != "pending" or status not in ("succeeded", "failed"):
                raise ValueError(f"charge {old['id']} is {old['status']}: only a pending charge "
                                 f"settles, as succeeded or failed (not {status!r})")
            new = {**old, "status": status, "paid": status == "succeeded",
                   "captured": status == "succeeded",
                   "amount_captured": old["amount"] if status == "succeeded" else 0}
            if status == "failed":
                new.update(failure_code="card_declined", failure_message="Your card was declined.")
            self._replace("charges", new)
            self._record_event(f"charge.{status}", new, old, at)
            return new

    def update_refund(self, refund: Any, status: str, *, at: int | None = None) -> dict:
        """A refund's status moves on (a pending one succeeds, or fails at the bank);
        a failed or canceled refund gives its amount back to the charge."""
        with self._lock:
            old = self._resolve("refunds", refund, "refund")
            if status not in REFUND_STATUSES or old["status"] in ("failed", "canceled"):
                raise ValueError(f"refund {old['id']} is {old['status']}: it cannot become "
                                 f"{status!r}")
            new = {**old, "status": status}
            if status == "succeeded" and old["balance_transaction"] is None:
                new["balance_transaction"] = stable_id("txn", self.account_fragment, old["id"])
            if status in ("failed", "canceled"):
                if status == "failed":
                    new["failure_reason"] = "expired_or_canceled_card"
                self._refund_on_charge(self._tables["charges"][old["charge"]], -old["amount"])
            self._replace("refunds", new)
            for kind in ("refund.updated", "charge.refund.updated"):
                self._record_event(kind, new, old, at)
            if status == "failed":
                self._record_event("refund.failed", new, None, at)
            return new

    def update_dispute(self, dispute: Any, status: str, *, at: int | None = None) -> dict:
        """A dispute is answered (`under_review`), or closes (`won`, `lost`, `warning_closed`)."""
        with self._lock:
            old = self._resolve("disputes", dispute, "dispute")
            if status not in OPEN_DISPUTE_STATUSES + CLOSED_DISPUTE_STATUSES \
                    or old["status"] in CLOSED_DISPUTE_STATUSES:
                raise ValueError(f"dispute {old['id']} is {old['status']}: it cannot become "
                                 f"{status!r}")
            new = {**old, "status": status}
            self._replace("disputes", new)
            closed = status in CLOSED_DISPUTE_STATUSES
            self._record_event("charge.dispute.closed" if closed else "charge.dispute.updated",
                               new, old, at)
            return new

    def _record_event(self, kind: str, obj: dict, before: dict | None, at: int | None) -> None:
        """An event about a stored object, as Stripe renders it: the object after the
        change and, for an update (`*.updated`: Stripe sends previous_attributes on no
        other kind), the old values of the top-level keys that changed. Made by Stripe
        itself (a bank's answer), so it has no request id."""
        at = self.now if at is None else int(at)
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if before is not None and kind.endswith(".updated"):
            data["previous_attributes"] = {key: copy.deepcopy(value) for key, value in before.items()
                                           if obj.get(key) != value}
        self.stored_events.append({
            "id": stable_id("evt", self.account_fragment, obj["id"], at, kind,
                            len(self.stored_events)),
            "object": "event", "api_version": API_VERSION, "created": at, "data": data,
            "livemode": self.livemode, "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None}, "type": kind,
        })
        self.version += 1

    def add_dispute(self, charge: Any, amount: int | None = None, *,
                    status: str = "needs_response", reason: str = "general",
                    created: int | None = None, metadata: dict | None = None,
                    id: str | None = None) -> dict:
        """A dispute (chargeback, or an inquiry for the warning_* statuses) of a charge."""
        with self._lock:
            ch = self._resolve("charges", charge, "charge")
            if status not in OPEN_DISPUTE_STATUSES + CLOSED_DISPUTE_STATUSES:
                raise ValueError(f"unknown dispute status {status!r}")
            created = self.now if created is None else int(created)
            inquiry = status.startswith("warning_")
            card = (ch.get("payment_method_details") or {}).get("card") or {}
            brand = card.get("brand", "visa")
            answered = status in ("under_review", "warning_under_review", "won", "lost")
            dispute = {
                "id": id or self.new_id("dp", "disputes"),
                "object": "dispute",
                "amount": ch["amount"] if amount is None else int(amount),
                "balance_transactions": [],
                "charge": ch["id"],
                "created": created,
                "currency": ch["currency"],
                "enhanced_eligibility_types": [],
                "evidence": {name: None for name in _EVIDENCE_FIELDS} | {"enhanced_evidence": {}},
                "evidence_details": {
                    "due_by": created + 7 * DAY + (DAY - created % DAY) - 1,
                    "enhanced_eligibility": {},
                    "has_evidence": answered,
                    "past_due": False,
                    "submission_count": 1 if answered else 0,
                },
                "is_charge_refundable": inquiry,
                "livemode": self.livemode,
                "metadata": dict(metadata or {}),
                "payment_intent": ch["payment_intent"],
                "payment_method_details": {
                    "card": {"brand": brand, "case_type": "inquiry" if inquiry else "chargeback",
                             "network": brand,
                             "network_reason_code": _NETWORK_REASON.get(reason, "13.3")},
                    "type": "card",
                },
                "reason": reason,
                "status": status,
            }
            self.add("disputes", dispute)
            if not ch["disputed"]:
                self._replace("charges", {**ch, "disputed": True})
            return dispute


_EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)
