#!/usr/bin/env python3
"""Checks the relative links of README.md and docs/*.md: every linked file exists, and every
#anchor names a heading (GitHub's slugs) or an explicit <a id/name> of the target page.
External links (http:, https:, mailto:) are not fetched. Links inside code (fenced blocks and
`inline code`) are not links. Python 3 standard library only.
Usage: tests/docs/check_links.py [FILE.md ...]   (default: README.md docs/*.md; run from the root)
Exit 0 when every link resolves; 1 with one line per broken link (file:line: link: why)."""
import glob
import os
import re
import sys
import unicodedata

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); text may hold one level of brackets
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+[^>]*(?:id|name)=\"([^\"]+)\"", re.I)


def slug(text):
    """GitHub's heading anchor: markdown and HTML tags dropped, lower case, punctuation other
    than '-' and '_' removed, each space a '-'."""
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").replace("~", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # _emphasis_, not snake_case
    out = []
    for ch in text.lower():
        cat = unicodedata.category(ch)
        if ch in "-_" or ch == " " or cat[0] in "LN" or cat == "Mn":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def lines_outside_code(path):
    """(line number, text) of the lines outside fenced code, inline code blanked."""
    fenced = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = FENCE.match(line)
            if m:
                if fenced is None:
                    fenced = m.group(1)
                elif m.group(1) == fenced:
                    fenced = None
                continue
            if fenced is None:
                yield n, INLINE_CODE.sub(lambda c: " " * len(c.group(0)), line.rstrip("\n"))


_anchors = {}


def headings_raw(path):
    """Headings with their inline code, for slugs (lines_outside_code blanks inline code)."""
    fenced = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = FENCE.match(line)
            if m:
                fenced = m.group(1) if fenced is None else (None if m.group(1) == fenced else fenced)
                continue
            if fenced is None:
                yield line.rstrip("\n")


def anchors_of(path):
    if path not in _anchors:
        seen, found = {}, set()
        for line in headings_raw(path):
            m = HEADING.match(line)
            if m:
                base = slug(m.group(2))
                k = seen.get(base, 0)
                seen[base] = k + 1
                found.add(base if k == 0 else "%s-%d" % (base, k))
            found.update(HTML_ANCHOR.findall(line))
        _anchors[path] = found
    return _anchors[path]


def check(path):
    """(links checked, problems)."""
    problems, count = [], 0
    base = os.path.dirname(path)
    for n, line in lines_outside_code(path):
        targets = [m.group(1) for m in LINK.finditer(line)]
        m = REFDEF.match(line)
        if m:
            targets.append(m.group(1))
        for t in targets:
            if not t or re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I):
                continue  # external (http:, https:, mailto:, ...) or empty
            count += 1
            file_part, _, anchor = t.partition("#")
            target = os.path.normpath(os.path.join(base, file_part)) if file_part else path
            if file_part and not os.path.exists(target):
                problems.append("%s:%d: %s: no such file %s" % (path, n, t, target))
                continue
            if anchor and target.endswith(".md") and os.path.isfile(target):
                if anchor not in anchors_of(target):
                    problems.append("%s:%d: %s: no heading or anchor #%s in %s" % (path, n, t, anchor, target))
    return count, problems


def main(argv):
    files = argv[1:] or ["README.md"] + sorted(glob.glob("docs/*.md"))
    problems, links = [], 0
    for f in files:
        n, p = check(f)
        links += n
        problems += p
    for p in problems:
        print("FAIL " + p)
    print("link check of %d files: %d passed, %d failed" % (len(files), links - len(problems), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
