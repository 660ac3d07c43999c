"""What staff are told at the desk as they scan, from what the log knows: the item is already on loan (a
checkout that needs the deliberate override), it was not lent since the outage (a checkin or renewal the
ILS will settle), the patron was already registered offline.

A warning is `{code, message}`, and `blocking: "yes"` when the scan needs the override (node/api/circulation.py).
"""

from __future__ import annotations

from node.ports import CirculationView

ScanWarning = dict[str, str]


def warning(code: str, message: str, **extra: str) -> ScanWarning:
    return {"code": code, "message": message, **extra}


class ScanWarnings:
    def __init__(self, log: CirculationView) -> None:
        self.log = log

    def checkout(self, patron: str, item: str) -> list[ScanWarning]:
        loan = self.log.state.loans.get(item)
        if loan is None:
            return []
        if loan.patron == patron:
            return [{"code": "already_on_loan_to_patron", "blocking": "yes",
                     "message": f"item {item} is already on loan to this patron: renew it instead"}]
        where = f" (lent at {self.log.desk_of(loan.node)})" if loan.node else ""
        return [{"code": "item_on_loan", "blocking": "yes",
                 "message": f"item {item} is on loan to patron {loan.patron}{where}"}]

    def checkin(self, item: str) -> list[ScanWarning]:
        state = self.log.state
        if item in state.loans:
            return []
        if item in state.returned:
            return [{"code": "not_on_loan", "blocking": "no",
                     "message": f"item {item} was already checked in since the outage"}]
        return [{"code": "no_offline_loan", "blocking": "no",
                 "message": f"no loan of item {item} since the outage; the ILS will check it in"}]

    def renewal(self, item: str) -> list[ScanWarning]:
        if item in self.log.state.loans:
            return []
        return [{"code": "no_offline_loan", "blocking": "no",
                 "message": f"no loan of item {item} since the outage; the ILS will renew it if it can"}]

    def registration(self, patron: str) -> list[ScanWarning]:
        if patron in self.log.state.registrations:
            return [warning("already_registered", f"patron {patron} was already registered offline")]
        return []
