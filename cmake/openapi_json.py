#!/usr/bin/env python3
"""docs/openapi.yaml -> JSON (served at GET /openapi.json) and a C file embedding it.

Usage: openapi_json.py <openapi.yaml> <out.json> <out.c>. Needs python3-yaml (scripts/setup).
"""
import json
import sys

try:
    import yaml
except ImportError:
    sys.exit("openapi_json.py: python3-yaml is missing: run scripts/setup (Debian package python3-yaml)")


def main():
    src, out_json, out_c = sys.argv[1:4]
    with open(src, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc.pop("x-shared-headers", None)  # the anchors' holder: resolved, nothing refers to it
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    with open(out_json, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    raw = text.encode("utf-8")
    lines = []
    for i in range(0, len(raw), 60):
        chunk = raw[i:i + 60]
        lines.append('    "' + "".join(
            "\\%03o" % b if b < 0x20 or b >= 0x7f or b in (0x22, 0x5c, 0x3f) else chr(b) for b in chunk) + '"')
    with open(out_c, "w", encoding="utf-8") as f:
        f.write("/* Generated from docs/openapi.yaml by cmake/openapi_json.py: do not edit. */\n")
        f.write('#include "openapi.h"\n\n')
        f.write("static const char doc[] =\n" + "\n".join(lines) + ";\n\n")
        f.write("const char *openapi_document(void)\n{\n    return doc;\n}\n")


if __name__ == "__main__":
    main()
