#!/usr/bin/env python3
"""Generate protocols/schemas/*.json (JSON Schema 2020-12) from the library's models.

    .venv/bin/python scripts/gen_schemas.py          # write the files
    .venv/bin/python scripts/gen_schemas.py --check  # exit 1 when they drifted from the code

The schemas come from ``keycard_agents._jose._claims.protocol_schemas()``: the A2A 1.0 Agent
Card model, the delegation extension ``params`` and the delegated / user token claims
(RFC 9068 §2.2, RFC 8693 §4.1 and §4.4). The test suite fails when the checked-in files
differ from what this script would write.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from keycard_agents._jose._claims import protocol_schemas

SCHEMAS = Path(__file__).resolve().parent.parent / "protocols" / "schemas"


def render() -> dict[str, str]:
    """File name -> file content, exactly as written."""
    return {
        name: json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
        for name, schema in protocol_schemas().items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate protocols/schemas/ from the models.")
    parser.add_argument("--check", action="store_true", help="fail when files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, content in render().items():
        path = SCHEMAS / name
        if path.exists() and path.read_text(encoding="utf-8") == content:
            continue
        stale.append(name)
        if not args.check:
            SCHEMAS.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            print(f"wrote protocols/schemas/{name}")
    if args.check and stale:
        print("out of date: " + ", ".join(stale) + " (run scripts/gen_schemas.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
