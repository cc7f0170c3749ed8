"""Display names for tenants and API keys: what people read instead of ``ten_…`` and key ids.

A tenant shows as its name; a key as its label (set when the key is made), or ``key <id>``
when it has none. Both tables are small; a page or an export reads them once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import ApiKey, Tenant


@dataclass(frozen=True)
class Names:
    tenants: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def tenant(self, tenant_id: str | None) -> str | None:
        if tenant_id is None:
            return None
        return self.tenants.get(tenant_id, tenant_id)

    def key(self, key_id: str | None) -> str | None:
        """A key's label; ``key <id>`` without one. Accepts the workflow's ``key:<id>``."""
        if key_id is None:
            return None
        if key_id.startswith("key:"):
            key_id = key_id[4:]
        elif ":" in key_id:  # system:seed, cli:operator
            return key_id
        return self.keys.get(key_id) or f"key {key_id}"


def load_names(session: Session) -> Names:
    tenants = {t_id: name for t_id, name in session.execute(select(Tenant.id, Tenant.name))}
    keys = {
        k_id: label for k_id, label in session.execute(select(ApiKey.id, ApiKey.label)) if label
    }
    return Names(tenants, keys)
