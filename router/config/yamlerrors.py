"""YAML syntax errors in plain words, at the line where the mistake is.

PyYAML says where it gave up (`problem_mark`) and, for some errors, where the
construct it was reading started (`context_mark`). For an unclosed bracket or
quote the mistake is where it was opened, not where the parser noticed; for
bad indentation or a stray character it is where the parser stopped. Token
names such as '<block mapping start>' are said in words.
"""

from __future__ import annotations

import re

import yaml

_TOKENS = {
    "<stream end>": "the end of the file",
    "<document start>": "'---'",
    "<document end>": "'...'",
    "<block end>": "the end of the indented block",
    "<block mapping start>": "a 'key: value' indented differently",
    "<block sequence start>": "a '- ' item indented differently",
    "<scalar>": "a value",
    "<alias>": "an alias (*name)",
    "<anchor>": "an anchor (&name)",
    "<tag>": "a tag (!name)",
    "<directive>": "a directive (%name)",
    "?": "a key",
    "-": "a '- ' item",
}
_EXPECTED = re.compile(r"^expected (?P<expected>.+), but (?:got|found) (?P<found>'.+')$")
_FLOW = {"while parsing a flow sequence": "[", "while parsing a flow mapping": "{"}
_STARTS = {yaml.FlowSequenceStartToken: "]", yaml.FlowMappingStartToken: "}"}
_ENDS = {yaml.FlowSequenceEndToken: "]", yaml.FlowMappingEndToken: "}"}


def describe(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, str]:
    """The line (1-based) of the mistake in `text`, and what is wrong there, on one line."""
    problem = exc.problem or str(exc)
    context = exc.context or ""
    here = exc.problem_mark or exc.context_mark
    line = here.line + 1 if here is not None else 1
    start = exc.context_mark.line + 1 if exc.context_mark is not None else line
    expected = _EXPECTED.match(problem)
    if context in _FLOW and expected and exc.context_mark is not None:
        return _flow(exc.context_mark, _FLOW[context], expected, line, text)
    if context.startswith("while scanning a quoted scalar") and exc.context_mark is not None:
        return start, _unclosed_quote(exc.context_mark, problem, line, start)
    if expected and context in (
        "while parsing a block mapping",
        "while parsing a block collection",
    ):
        return line, _misplaced(context, start, _word(expected["found"]))
    if context == "while scanning a simple key":
        return start, "this line has no ':': expected 'key: value'"
    anchor = re.fullmatch(r"found duplicate anchor '(.*)'; first occurrence", context)
    if anchor:
        return line, f"anchor '&{anchor[1]}' is already defined on line {start}"
    message = _special(problem, context)
    return line, message if message is not None else _generic(problem, context, start, line)


def _flow(
    opened: yaml.Mark, opener: str, expected: re.Match[str], line: int, text: str
) -> tuple[int, str]:
    """A flow list or mapping that hit something other than ',' or its closing bracket."""
    start = opened.line + 1
    found = _word(expected["found"])
    at = f" on line {line}" if line != start and found != _TOKENS["<stream end>"] else ""
    if not _closed(text, opened):
        return (
            start,
            f"unclosed {opener!r} opened here: expected {expected['expected']}, found {found}{at}",
        )
    hint = " (is a ',' missing?)" if "','" in expected["expected"] else ""
    inside = f" inside the {opener!r} opened on line {start}" if at else ""
    return line, f"expected {expected['expected']}{inside}, found {found}{hint}"


def _closed(text: str, opened: yaml.Mark) -> bool:
    """Whether the bracket at `opened` is closed by its own kind of bracket later on."""
    open_brackets: list[str] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.index < opened.index:
                continue
            closer = _STARTS.get(type(token))
            if closer is not None:
                open_brackets.append(closer)
            elif type(token) in _ENDS:
                if not open_brackets or open_brackets.pop() != _ENDS[type(token)]:
                    return False
                if not open_brackets:
                    return True
    except yaml.YAMLError:
        pass
    return False


def _unclosed_quote(opened: yaml.Mark, problem: str, line: int, start: int) -> str:
    quote = _char_at(opened) if _char_at(opened) in ("'", '"') else '"'
    if "document separator" in problem:
        found = f"'---' on line {line}"
    elif "end of stream" in problem:
        found = "the end of the file"
    else:
        return _generic(problem, "", start, line)
    return f"unclosed {quote!r} opened here: expected a closing {quote!r}, found {found}"


def _misplaced(context: str, start: int, found: str) -> str:
    """A block mapping or list met something that does not belong to it."""
    if found in ("']'", "'}'"):
        return f"unexpected {found}: no bracket is open here"
    if found == "','":
        return "unexpected ',': no bracket is open here (quote a value that holds ', ')"
    if context == "while parsing a block mapping":
        wanted = f"a key lined up with the mapping that starts on line {start}"
    else:
        wanted = f"a '- ' item lined up with the list that starts on line {start}"
    return f"bad indentation: expected {wanted}, or less indentation; found {found}"


def _special(problem: str, context: str) -> str | None:
    """Mistakes PyYAML describes in its own terms, said in the rules' terms."""
    if problem == "mapping values are not allowed here":
        return "unexpected ':' here: line this key up with the others, or quote a value with ': '"
    char = re.fullmatch(r"found character '(.+)' that cannot start any token", problem)
    if char and char[1] == "\\t":
        return "a tab: indent with spaces, YAML does not allow tabs"
    if char:
        return f"'{char[1]}' cannot start a value: quote the value"
    alias = re.fullmatch(r"found undefined alias '(.*)'", problem)
    if alias or context in ("while scanning an alias", "while scanning an anchor"):
        return "a value that starts with '*' or '&' must be quoted"
    if context == "expected a single document in the stream":
        return "a second document starts here: a rules file holds one ('---' only at the top)"
    escape = re.fullmatch(r"found unknown escape character '(.+)'", problem)
    if escape:
        return f"unknown escape '\\{escape[1]}' in double quotes: use single quotes"
    return None


def _generic(problem: str, context: str, start: int, line: int) -> str:
    expected = _EXPECTED.match(problem)
    if expected:
        wanted = expected["expected"].replace("the node content", "a value")
        problem = f"expected {_word(wanted)}, found {_word(expected['found'])}"
    if context and start != line:
        problem += f" ({context.removeprefix('while ')} on line {start})"
    return "YAML syntax error: " + " ".join(problem.split())


def _word(token: str) -> str:
    """'<block end>' or '?' as words; other tokens (a bracket, a comma) stay quoted."""
    bare = token.strip("'")
    return _TOKENS.get(bare, token)


def _char_at(mark: yaml.Mark) -> str:
    buffer = getattr(mark, "buffer", None)
    pointer = getattr(mark, "pointer", -1)
    if isinstance(buffer, str) and 0 <= pointer < len(buffer):
        return buffer[pointer]
    return ""
