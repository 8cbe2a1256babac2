"""The store's reads and writes of the JSON API's stored responses.

Part of :class:`~flask_loyalty.store.LoyaltyStore` (a mixin of it): like the
rest of the store, the only code that touches the database session. The rows
back the API's ``Idempotency-Key`` (see :mod:`flask_loyalty.idempotency`).
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa


class ApiResponseQueries:
    """Idempotency-Key rows of the store."""

    models: t.Any
    execute: t.Callable[..., t.Any]
    fresh: t.Callable[[t.Any], t.Any]

    def insert_api_response(self, values: dict[str, t.Any]) -> int:
        """Insert a claim of a key and return its id.

        :raises sqlalchemy.exc.IntegrityError: if the member used the key
            before (the unique ``(member_id, key)`` constraint decides).
        """
        r = self.models.ApiResponse.__table__
        return int(self.execute(r.insert().values(**values)).inserted_primary_key[0])

    def find_api_response(self, member_id: int, key: str) -> t.Any:
        """The member's row for ``key``, or ``None``."""
        r = self.models.ApiResponse.__table__
        query = sa.select(r).where(r.c.member_id == member_id, r.c.key == key)
        return self.execute(self.fresh(query)).first()

    def finish_api_response(self, response_id: int, status_code: int, body: str) -> None:
        """Store the response of a claimed key."""
        r = self.models.ApiResponse.__table__
        self.execute(r.update().where(r.c.id == response_id).values(status_code=status_code, body=body))

    def take_over_api_response(self, response_id: int, before: dt.datetime, now: dt.datetime) -> bool:
        """Claim afresh a key whose request never finished (claimed before ``before``).

        :returns: whether this call took it (one conditional ``UPDATE``:
            of concurrent callers, exactly one does).
        """
        r = self.models.ApiResponse.__table__
        result = self.execute(
            r.update()
            .where(r.c.id == response_id, r.c.status_code == 0, r.c.created_at < before)
            .values(created_at=now)
        )
        return bool(result.rowcount == 1)

    def delete_api_response(self, response_id: int) -> None:
        """Forget a claim, so that its key may be used again."""
        r = self.models.ApiResponse.__table__
        self.execute(r.delete().where(r.c.id == response_id))

    def purge_api_responses(self, before: dt.datetime, limit: int) -> int:
        """Delete up to ``limit`` stored responses created before ``before``; return how many."""
        r = self.models.ApiResponse.__table__
        ids = list(self.execute(sa.select(r.c.id).where(r.c.created_at < before).limit(limit)).scalars())
        if not ids:
            return 0
        self.execute(r.delete().where(r.c.id.in_(ids)))
        return len(ids)
