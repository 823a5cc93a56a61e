"""Generated blocks of README.md: the text between a begin and an end marker is rewritten by a generator
(``--write``) or compared with what it would write (``--check``, run by the tests)."""
import argparse
import os
import sys
from typing import Callable, List, Optional

from op3_walk import PACKAGE_ROOT

README = os.path.join(PACKAGE_ROOT, "README.md")


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with everything between ``begin`` and ``end`` replaced by ``body`` (ValueError without markers)."""
    if begin not in text or end not in text:
        raise ValueError("README.md lacks the %s ... %s markers" % (begin, end))
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + begin + "\n" + body + end + tail


def block_main(argv: Optional[List[str]], description: str, begin: str, end: str, body: Callable[[], str],
               command: str) -> int:
    """CLI of one generated block: ``--write`` rewrites it in README.md, ``--check`` exits 1 when it is stale."""
    parser = argparse.ArgumentParser(description=description)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    with open(README) as fh:
        current = fh.read()
    wanted = replace_block(current, begin, end, body())
    if args.check:
        if wanted != current:
            print("README.md's block %s is stale: run %s --write" % (begin, command), file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        with open(README, "w") as fh:
            fh.write(wanted)
    return 0
