#!/usr/bin/env python3
"""Embeds a text file in C as `const char *<func>(void)` (used for openapi.json)."""
import sys

src, dst, func = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(src, encoding="utf-8").read()
with open(dst, "w", encoding="utf-8") as f:
    f.write("/* generated from %s by api/embed.py; do not edit */\n" % src.split("/")[-1])
    f.write('#include "bn_api.h"\n\nstatic const char text[] =\n')
    for line in data.splitlines(True):
        esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        f.write('    "%s"\n' % esc)
    f.write(";\n\nconst char *%s(void)\n{\n    return text;\n}\n" % func)
