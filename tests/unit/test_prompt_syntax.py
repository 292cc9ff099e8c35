"""imagegen.prompts.syntax: A1111's prompt language (attention, scheduling, extra-network tags), no torch.

The cases marked "A1111 doctest" are the documented examples of A1111's modules/prompt_parser.py and
modules/extra_networks.py, as facts; the others were checked against A1111's own functions (lark 1.1.2) where A1111
gives an answer, or pin the documented differences.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from imagegen.errors import InvalidRequest
from imagegen.prompts.syntax import (
    BREAK,
    MAX_NESTING,
    Fragment,
    LoraTag,
    NetworkTag,
    ScheduleEntry,
    extract_network_tags,
    lora_tags,
    parse_attention,
    prompt_schedule,
    step_prompt,
)

F = Fragment


def pairs(text: str) -> list[tuple[str, float]]:
    """parse_attention as A1111's list of [text, weight] pairs (BREAK is ("BREAK", -1.0) there too)."""
    return [(fragment.text, fragment.weight) for fragment in parse_attention(text)]


def schedule(text: str, steps: int = 10) -> list[tuple[int, str]]:
    """prompt_schedule as A1111's get_learned_conditioning_prompt_schedules([text], steps)[0]."""
    return [(entry.end_at_step, entry.prompt) for entry in prompt_schedule(text, steps)]


def alternating(*prompts: str, steps: int = 10) -> list[tuple[int, str]]:
    return [(step, prompts[(step - 1) % len(prompts)]) for step in range(1, steps + 1)]


# -- parse_attention: A1111 doctests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
    ],
)
def test_attention_a1111_doctests(text, expected):
    assert pairs(text) == expected


# -- parse_attention: weights ------------------------------------------------------------------------------------


def test_an_empty_prompt_is_one_empty_fragment():
    assert parse_attention("") == (F("", 1.0),)
    assert parse_attention("()[]") == (F("", 1.0),)


def test_weight_one_in_brackets_is_the_same_as_no_brackets():
    assert parse_attention("(a red circle:1.0)") == (F("a red circle", 1.0),)
    assert parse_attention("(a red circle:1.0)") == parse_attention("a red circle")
    assert parse_attention("x (y:1)") == (F("x y", 1.0),)


def test_nested_brackets_multiply_in_a1111_float_order():
    assert pairs("((x))") == [("x", 1.2100000000000002)]
    assert pairs("[x]") == [("x", 1 / 1.1)]
    assert pairs("[[x]]") == [("x", 1.0 * (1 / 1.1) * (1 / 1.1))]
    # The innermost bracket's factor comes first: 1.0 * 1.3 * 1.1, then the square bracket's.
    assert pairs("[((x:1.3))]") == [("x", 1.0 * 1.3 * 1.1 * (1 / 1.1))]
    assert pairs("((x):0.5)") == [("x", 1.0 * 1.1 * 0.5)]
    assert pairs("(x:-1)") == [("x", -1.0)]
    assert pairs("(x:+.5)") == [("x", 0.5)]


def test_an_explicit_weight_allows_spaces_and_unicode_digits():
    assert pairs("(x: 1.5 )") == [("x", 1.5)]
    assert pairs("(x:\t1.5\n)") == [("x", 1.5)]
    assert pairs("(x:\u0661.\u0665)") == [("x", 1.5)]  # A1111's \d is Unicode, and float() reads it


def test_a_colon_that_is_not_a_weight_is_text():
    assert pairs("(a:b)") == [("a:b", 1.1)]
    assert pairs("a: b") == [("a: b", 1.0)]
    assert pairs("(a:1.5x)") == [("a:1.5x", 1.1)]
    assert pairs("(a: )") == [("a: ", 1.1)]
    assert pairs("(a:+)") == [("a:+", 1.1)]


def test_a_weight_with_no_round_bracket_open_is_text():
    assert pairs("a:1.2)") == [("a:1.2)", 1.0)]
    assert pairs("[a:1.2)]") == [("a:1.2)", 1 / 1.1)]


def test_round_and_square_brackets_are_counted_separately():
    assert pairs("(a[b)c]") == [("a", 1.1), ("b", 1.1 * (1 / 1.1)), ("c", 1 / 1.1)]
    assert pairs("[a(b]c)") == [("a", 1 / 1.1), ("b", (1 / 1.1) * 1.1), ("c", 1.1)]


def test_unclosed_brackets_weight_the_rest_round_first_then_square():
    assert pairs("a (b") == [("a ", 1.0), ("b", 1.1)]
    assert pairs("a [b") == [("a ", 1.0), ("b", 1 / 1.1)]
    assert pairs("(a[b") == [("a", 1.1), ("b", 1.0 * 1.1 * (1 / 1.1))]
    assert pairs("[a(b") == [("a", 1 / 1.1), ("b", 1.0 * 1.1 * (1 / 1.1))]
    assert pairs("((a") == [("a", 1.2100000000000002)]
    assert pairs("(a(b)c") == [("a", 1.1), ("b", 1.0 * 1.1 * 1.1), ("c", 1.1)]


def test_a_stray_closing_bracket_is_text():
    assert pairs("a) b]") == [("a) b]", 1.0)]
    assert pairs("(a]b)") == [("a]b", 1.1)]
    assert pairs("[a)b]") == [("a)b", 1 / 1.1)]
    assert pairs(")(a)") == [(")", 1.0), ("a", 1.1)]


def test_escapes():
    assert pairs("\\(a\\)") == [("(a)", 1.0)]
    assert pairs("\\[a\\]") == [("[a]", 1.0)]
    assert pairs("a\\\\b") == [("a\\b", 1.0)]
    assert pairs("(\\(x\\))") == [("(x)", 1.1)]


def test_a_backslash_before_anything_else_is_dropped():
    assert pairs("a\\b") == [("ab", 1.0)]
    assert pairs("a\\") == [("a", 1.0)]
    assert pairs("\\:") == [(":", 1.0)]
    # A1111 keeps the dropped backslash as an empty run of weight 1, which stays when its neighbours differ.
    assert pairs("(a)\\") == [("a", 1.1), ("", 1.0)]
    assert pairs("(a\\b)") == [("ab", 1.1)]


def test_neighbouring_equal_weights_merge():
    assert pairs("(a)(b)") == [("ab", 1.1)]
    assert pairs("(a:1.1)(b)") == [("ab", 1.1)]
    assert pairs("(a)b(c)") == [("a", 1.1), ("b", 1.0), ("c", 1.1)]
    assert pairs("(a:0)(b:-0)") == [("ab", 0.0)]


# -- parse_attention: BREAK ---------------------------------------------------------------------------------------


def test_break_splits_and_eats_the_spaces_around_it():
    assert parse_attention("a BREAK b") == (F("a", 1.0), BREAK, F("b", 1.0))
    assert parse_attention("a\n BREAK\tb") == (F("a", 1.0), BREAK, F("b", 1.0))
    assert parse_attention("BREAK") == (F("", 1.0), BREAK, F("", 1.0))
    assert parse_attention("a BREAK BREAK b") == (F("a", 1.0), BREAK, F("", 1.0), BREAK, F("b", 1.0))


def test_break_is_a_whole_word_in_capitals():
    assert parse_attention("a,BREAK,b") == (F("a,", 1.0), BREAK, F(",b", 1.0))  # A1111's \b, not spaces only
    assert parse_attention("aBREAK b") == (F("aBREAK b", 1.0),)
    assert parse_attention("a BREAKb") == (F("a BREAKb", 1.0),)
    assert parse_attention("a BREAK_b") == (F("a BREAK_b", 1.0),)
    assert parse_attention("a break b") == (F("a break b", 1.0),)
    assert parse_attention("a:BREAK") == (F("a:", 1.0), BREAK, F("", 1.0))


def test_break_reads_as_a1111s_pair_but_is_its_own_marker():
    assert (BREAK.text, BREAK.weight) == ("BREAK", -1.0)
    assert isinstance(BREAK, Fragment)
    assert F("BREAK", -1.0) != BREAK
    assert hash(BREAK) == hash(BREAK)  # usable in sets and as a dict key
    # Text that merely reads "BREAK" with weight -1 is text, not the marker.
    assert parse_attention("(BRE\\AK:-1)") == (F("BREAK", -1.0),)
    assert parse_attention("(BRE\\AK:-1)")[0] != BREAK


def test_break_inside_brackets_still_breaks():
    # A1111 multiplies its ["BREAK", -1] by the brackets' weights, so there it would become the word "BREAK".
    assert parse_attention("(a BREAK b)") == (F("a", 1.1), BREAK, F("b", 1.1))
    assert parse_attention("[a BREAK") == (F("a", 1 / 1.1), BREAK, F("", 1 / 1.1))
    assert parse_attention("(a BREAK b:0)") == (F("a", 0.0), BREAK, F("b", 0.0))


def test_break_is_never_merged_with_its_neighbours():
    # Neighbours of weight -1, the marker's own, stay apart from it.
    assert parse_attention("(a BREAK b:-1)") == (F("a", -1.0), BREAK, F("b", -1.0))


# -- parse_attention: errors and limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["(x:1.2.3)", "(x:.)", "(x:..5)", "a (b:1..) c"])
def test_a_weight_that_is_no_number_is_refused(text):
    with pytest.raises(InvalidRequest) as exc:
        parse_attention(text)
    assert exc.value.field == "prompt"
    assert "is not a number; write an attention weight such as (word:1.2)" in exc.value.message
    assert text[text.index(":") : text.index(")") + 1] in exc.value.message


def test_a_weight_that_is_not_finite_is_refused():
    with pytest.raises(InvalidRequest) as exc:
        parse_attention("a (huge:" + "9" * 400 + ")")
    assert exc.value.field == "prompt"
    assert exc.value.message == "the attention weight of 'huge' is inf; use weights such as (word:1.2)"


def test_text_inside_too_many_brackets_is_refused_but_brackets_alone_are_not():
    weight = 1.0
    for _ in range(MAX_NESTING):
        weight *= 1.1
    assert parse_attention("(" * MAX_NESTING + "x" + ")" * MAX_NESTING) == (F("x", weight),)
    assert parse_attention("(" * MAX_NESTING + "x") == (F("x", weight),)
    assert parse_attention("(" * (MAX_NESTING - 1) + "[x") == (F("x", weight / 1.1 * (1 / 1.1)),)
    with pytest.raises(InvalidRequest) as exc:
        parse_attention("(" * (MAX_NESTING + 1) + "x" + ")" * (MAX_NESTING + 1))
    assert exc.value.field == "prompt"
    assert exc.value.message == (
        "text is inside 101 open brackets, at most 100 are allowed (write \\( or \\[ for a literal bracket)"
    )
    with pytest.raises(InvalidRequest):
        parse_attention("(" * MAX_NESTING + "[x")
    with pytest.raises(InvalidRequest):
        parse_attention("[" * 60 + "(" * 41 + "\\(")
    with pytest.raises(InvalidRequest):
        parse_attention("[" * 60 + "(" * 41 + "BREAK")
    assert parse_attention("(" * 10_000) == (F("", 1.0),)
    assert parse_attention("]" * 10_000) == (F("]" * 10_000, 1.0),)


# -- prompt_schedule: A1111 doctests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test", [(10, "test")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a|(b:1.1)]", alternating("a", "(b:1.1)")),
        ("[fe|]male", alternating("female", "male")),
        ("[fe|||]male", alternating("female", "male", "male", "male")),
    ],
)
def test_schedule_a1111_doctests(text, expected):
    assert schedule(text) == expected


def test_schedule_a1111_doctest_that_a1111_does_not_meet():
    # A1111's doctest says [[5, 'a  c'], [10, 'a {b|d{ c']] ("not handling this right now"), but its grammar
    # allows "|" only in an alternation, so A1111 (lark 1.1.2 and 1.3) really returns the prompt unchanged.
    assert schedule("a [{b|d{:.5] c") == [(10, "a [{b|d{:.5] c")]


def test_schedule_a1111_comment_example():
    text = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
        "[ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert schedule(text, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


def test_schedule_a1111_get_learned_conditioning_example():
    assert prompt_schedule("a red crown", 20) == (ScheduleEntry(20, "a red crown"),)
    assert prompt_schedule("a [blue:green:5] jeweled crown", 20) == (
        ScheduleEntry(5, "a blue jeweled crown"),
        ScheduleEntry(20, "a green jeweled crown"),
    )


# -- prompt_schedule: the step of a change ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[a:b:3]", [(3, "a"), (10, "b")]),
        ("[a:b:+2]", [(2, "a"), (10, "b")]),
        ("[a:b:.5]", [(5, "a"), (10, "b")]),
        ("[a:b:0.25]", [(2, "a"), (10, "b")]),  # int(2.5)
        ("[a:b:1.5e-1]", [(1, "a"), (10, "b")]),  # 0.15 * 10
        ("[a:b:1e1]", [(10, "a")]),  # no ".": step 10
        ("[a:b:3.]", [(10, "a")]),  # "." makes it a fraction: 3.0 * 10, at most 10
        ("[a:b:12]", [(10, "a")]),
        ("[a:b:1e999]", [(10, "a")]),  # A1111: OverflowError
        ("[a:b:1.e999]", [(10, "a")]),
        ("[a:b:0]", [(10, "b")]),  # boundaries below 1 do not count, and step >= 1 > 0
        ("[a:b:-3]", [(10, "b")]),
        ("[a:b:-1e999]", [(10, "b")]),
        ("[a:b:0.05]", [(10, "b")]),  # int(0.5) == 0
        ("[a:b:0.1]", [(1, "a"), (10, "b")]),
        ("[a:b:1]", [(1, "a"), (10, "b")]),
        ("[a:b:10]", [(10, "a")]),
        ("[a:b:9]", [(9, "a"), (10, "b")]),
    ],
)
def test_when_is_a_step_or_a_fraction(text, expected):
    assert schedule(text) == expected


def test_when_allows_spaces_around_the_number_unicode_ones_too():
    assert schedule("x [a:b:3 ]") == [(3, "x a"), (10, "x b")]
    assert schedule("[ a : b : 3 ]") == [(3, " a "), (10, " b ")]
    assert schedule("[a:\u30003]") == [(3, ""), (10, "a")]


def test_from_only_and_to_only():
    assert schedule("a [b::3] c") == [(3, "a b c"), (10, "a  c")]
    assert schedule("a [b:3] c") == [(3, "a  c"), (10, "a b c")]
    assert schedule("[:3]") == [(3, ""), (10, "")]
    assert schedule("[::3]") == [(3, ""), (10, "")]


def test_with_one_step():
    assert schedule("[a:b:0.5]", 1) == [(1, "b")]
    assert schedule("[a:b:1]", 1) == [(1, "a")]
    assert schedule("[a|b]", 1) == [(1, "a")]


def test_equal_prompts_are_not_merged():
    assert schedule("[a:a:3]") == [(3, "a"), (10, "a")]
    assert schedule("[a:b:3][c:d:3]") == [(3, "ac"), (10, "bd")]
    assert schedule("[a:b:3][c:d:5]") == [(3, "ac"), (5, "bc"), (10, "bd")]


# -- prompt_schedule: alternation and nesting ----------------------------------------------------------------------


def test_alternation():
    assert schedule("[a|b|c]", 4) == [(1, "a"), (2, "b"), (3, "c"), (4, "a")]
    assert schedule("[|a]") == alternating("", "a")
    assert schedule("[a|b] [c:d:0.5]") == [
        (1, "a c"),
        (2, "b c"),
        (3, "a c"),
        (4, "b c"),
        (5, "a c"),
        (6, "b d"),
        (7, "a d"),
        (8, "b d"),
        (9, "a d"),
        (10, "b d"),
    ]
    assert schedule("[(a:1.2)|b]") == alternating("(a:1.2)", "b")
    assert schedule("[[a|b]|c]", 4) == [(1, "a"), (2, "c"), (3, "a"), (4, "c")]


def test_nesting():
    assert schedule("[[a:b:2]|c]") == [(1, "a"), *alternating("b", "c")[1:]]
    assert schedule("[[a|b]:3]") == [(1, ""), (2, ""), (3, ""), *alternating("a", "b")[3:]]
    assert schedule("[[a:b:2]:[c|d]:5]") == [
        (1, "a"),
        (2, "a"),
        (3, "b"),
        (4, "b"),
        (5, "b"),
        *alternating("c", "d")[5:],
    ]
    assert schedule("[[a|b]:c:3]", 4) == [(1, "a"), (2, "b"), (3, "a"), (4, "c")]
    # A scheduled step inside a branch that some steps do not take still counts as a boundary (A1111).
    assert schedule("[[a:b:7]::3]") == [(3, "a"), (7, ""), (10, "")]


def test_emphasis_is_kept_as_text_for_parse_attention():
    assert schedule("(([a:3]))") == [(3, "(())"), (10, "((a))")]
    assert schedule("([a:3]:1.2)") == [(3, "(:1.2)"), (10, "(a:1.2)")]
    assert schedule("[[a]:3]") == [(3, ""), (10, "[a]")]
    assert schedule("e[x:y:2](z)") == [(2, "ex(z)"), (10, "ey(z)")]
    assert schedule("\\(x\\) [a:2]") == [(2, "\\(x\\) "), (10, "\\(x\\) a")]


def test_stray_brackets_and_colons_at_the_top_level_are_text():
    assert schedule("a (b [c:2]") == [(2, "a (b "), (10, "a (b c")]
    assert schedule("x]: [c:2] )") == [(2, "x]:  )"), (10, "x]: c )")]
    assert schedule("[a:b]") == [(10, "[a:b]")]
    assert schedule("[a:b:c:3]") == [(10, "[a:b:c:3]")]
    assert schedule("(a:b:c) [d:2]") == [(2, "(a:b:c) "), (10, "(a:b:c) d")]
    assert schedule("[a:3]]") == [(3, "]"), (10, "a]")]
    assert schedule("[(a]) [b:2]") == [(2, "[(a]) "), (10, "[(a]) b")]
    assert schedule("[a:(b] [c:2]") == [(2, "[a:(b] "), (10, "[a:(b] c")]
    assert schedule("(" * 10_000) == [(10, "(" * 10_000)]


def test_a_construct_directly_before_a_stray_bracket_is_a_construct():
    # A1111's lark parser is ambiguous here and picks by Python's hash seed (it varies between A1111 runs);
    # the construct is one of its answers, and always the answer here.
    assert schedule("[a:2](") == [(2, "("), (10, "a(")]
    assert schedule("[a:2]:") == [(2, ":"), (10, "a:")]


@pytest.mark.parametrize(
    "text",
    [
        "a|b [c:3]",  # "|" only inside an alternation
        "(a|b) [c:3]",
        "[a|(b|c)] [c:3]",
        "[a|b:3]",
        "[a:b|c:3]",
        "[b:3] a\\",  # a backslash that escapes nothing
        "[b:3] a\\\nb",
        "[b:3] [a|(b:c:d)]",
    ],
)
def test_a_prompt_the_grammar_refuses_is_used_unchanged(text):
    assert schedule(text) == [(10, text)]


def test_escaped_characters_are_text():
    assert schedule("\\[a:3]") == [(10, "\\[a:3]")]
    assert schedule("[b:3] \\\\") == [(3, " \\\\"), (10, "b \\\\")]
    assert schedule("[a\\|b:3]") == [(3, ""), (10, "a\\|b")]
    assert schedule("[a\\:b:3]") == [(3, ""), (10, "a\\:b")]


def test_schedule_errors_and_limits():
    with pytest.raises(InvalidRequest) as exc:
        prompt_schedule("a", 0)
    assert exc.value.field == "num_inference_steps"
    assert exc.value.message == "must be at least 1, got 0"
    assert schedule("[" * MAX_NESTING + "a:2" + "]" * MAX_NESTING)[0] == (2, "[" * (MAX_NESTING - 1) + "]" * 99)
    with pytest.raises(InvalidRequest) as exc:
        prompt_schedule("x" + "(" * (MAX_NESTING + 1) + ")" * (MAX_NESTING + 1), 10)
    assert exc.value.field == "prompt"
    assert exc.value.message == "brackets nest 101 deep at character 101, at most 100 are allowed"
    # Pairs side by side do not nest; a closed pair no longer counts.
    assert schedule("(a)" * 200) == [(10, "(a)" * 200)]
    nest = "(" * (MAX_NESTING + 1) + ")" * (MAX_NESTING + 1)
    for before in ["()", "()()", "[(a)]"]:
        with pytest.raises(InvalidRequest):
            prompt_schedule(before + nest, 10)
    # A pair closed inside others leaves them open: 50 + 51 is 101 deep.
    with pytest.raises(InvalidRequest):
        prompt_schedule("(" * 50 + "()" + "(" * 51 + ")" * 101, 10)
    # Unpaired brackets do not nest: only pairs count.
    assert schedule("(" * 200 + "[a:2]" + "(" * 200) == [
        (2, "(" * 200 + "(" * 200),
        (10, "(" * 200 + "a" + "(" * 200),
    ]
    assert schedule("(" * 200 + ")" * 50 + "[a:2]") == [(2, "(" * 200 + ")" * 50), (10, "(" * 200 + ")" * 50 + "a")]


# -- step_prompt --------------------------------------------------------------------------------------------------


def test_step_prompt_is_the_first_entry_that_has_not_ended():
    entries = prompt_schedule("[x:y:3]", 10)
    assert [step_prompt(entries, step) for step in range(10)] == ["x"] * 4 + ["y"] * 6
    assert step_prompt(entries, 10) == "y"
    assert step_prompt(entries, 11) == "y"  # past the end: the last (A1111 would take the first)
    assert step_prompt([ScheduleEntry(3, "x"), ScheduleEntry(5, "y"), ScheduleEntry(7, "z")], 99) == "z"
    assert step_prompt(entries, -1) == "x"


def test_step_prompt_of_an_alternation_uses_the_first_option_twice():
    # A1111's off-by-one: 0-based sampler steps meet 1-based schedule steps, so steps 0 and 1 are both "a".
    entries = prompt_schedule("[a|b]", 4)
    assert [step_prompt(entries, step) for step in range(4)] == ["a", "a", "b", "a"]


def test_step_prompt_of_no_schedule_is_refused():
    with pytest.raises(InvalidRequest) as exc:
        step_prompt((), 0)
    assert exc.value.field == "prompt"
    assert exc.value.message == "a prompt schedule has at least one entry"


# -- extract_network_tags -----------------------------------------------------------------------------------------


def test_tags_are_cut_and_the_text_around_them_kept():
    assert extract_network_tags("a <lora:x:0.5> b") == ("a  b", (NetworkTag("lora", "x", ("0.5",)),))
    assert extract_network_tags("<lora:x>") == ("", (NetworkTag("lora", "x", ()),))
    assert extract_network_tags("no tags (here:1.2)") == ("no tags (here:1.2)", ())
    assert extract_network_tags("") == ("", ())


def test_tags_a1111_docstring_example():
    text = "1girl, <hypernet:agm:1.1> <extrasupernet:master:12:13:14> <hypernet:ray>"
    assert extract_network_tags(text) == (
        "1girl,   ",
        (
            NetworkTag("hypernet", "agm", ("1.1",)),
            NetworkTag("extrasupernet", "master", ("12", "13", "14")),
            NetworkTag("hypernet", "ray", ()),
        ),
    )


def test_what_is_a_tag():
    for text in ["<lora:>", "<:x>", "<lo ra:x>", "<lora x>", "<lora:x", "lora:x>", "<-:x>"]:
        assert extract_network_tags(text) == (text, ())
    assert extract_network_tags("<a:<lora:x:1>") == ("", (NetworkTag("a", "<lora", ("x", "1")),))
    assert extract_network_tags("<<lora:x>>") == ("<>", (NetworkTag("lora", "x", ()),))
    assert extract_network_tags("<lörä_2:x>") == ("", (NetworkTag("lörä_2", "x", ()),))  # \w is Unicode
    assert extract_network_tags("<lora:a\nb:1>") == ("", (NetworkTag("lora", "a\nb", ("1",)),))
    assert extract_network_tags("<lora::1:>") == ("", (NetworkTag("lora", "", ("1", "")),))


def test_tags_are_cut_before_scheduling():
    text, tags = extract_network_tags("[<lora:a:1>:<lora:b:0.5>:5] x")
    assert text == "[::5] x"
    assert [tag.name for tag in tags] == ["a", "b"]


def test_a_tag_reads_back_as_written():
    for text in ["<lora:x>", "<lora:x:0.5:unet=1>", "<lyco:a b:1:2:3>", "<lora::>"]:
        (tag,) = extract_network_tags(text)[1]
        assert tag.text == text


# -- lora_tags ----------------------------------------------------------------------------------------------------


def loras(text: str) -> tuple[LoraTag, ...]:
    return lora_tags(extract_network_tags(text)[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<lora:x>", LoraTag("x", 1.0, 1.0)),
        ("<lora:x:0.5>", LoraTag("x", 0.5, 0.5)),
        ("<lora:x:0.5:0.8>", LoraTag("x", 0.5, 0.8)),
        ("<lora:x:-1>", LoraTag("x", -1.0, -1.0)),
        ("<lora:x: 0.5 >", LoraTag("x", 0.5, 0.5)),  # float() strips, as in A1111
        ("<lora:x:1e-1>", LoraTag("x", 0.1, 0.1)),
        ("<lora:x:te=0.3>", LoraTag("x", 0.3, 0.3)),
        ("<lora:x:unet=0.2>", LoraTag("x", 1.0, 0.2)),
        ("<lora:x:0.5:unet=0.2>", LoraTag("x", 0.5, 0.2)),
        ("<lora:x:0.5:0.8:te=0.1>", LoraTag("x", 0.1, 0.8)),
        ("<lora:x:te=0.1:0.5>", LoraTag("x", 0.1, 0.1)),  # named after positional: te= wins, unet follows te
        ("<lora:x:unet=0.2:te=0.1>", LoraTag("x", 0.1, 0.2)),
        ("<lora:x:te=1:te=2>", LoraTag("x", 2.0, 2.0)),  # the last of a name wins
        ("<lyco:x:0.5>", LoraTag("x", 0.5, 0.5)),  # A1111 >= 1.5: lyco is another name of lora
        ("<lora:my lora v2.1:0.7>", LoraTag("my lora v2.1", 0.7, 0.7)),
    ],
)
def test_lora_weights(text, expected):
    assert loras(text) == (expected,)


def test_only_lora_and_lyco_tags_are_loras_in_order():
    text = "<hypernet:h:1> <lyco:b> <LORA:c> <lora:a:0.5> <lora:b:2>"
    assert loras(text) == (LoraTag("b", 1.0, 1.0), LoraTag("a", 0.5, 0.5), LoraTag("b", 2.0, 2.0))
    assert lora_tags([]) == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<lora:x:abc>", "<lora:x:abc>: the te weight 'abc' is not a finite number; write e.g. 0.8 or -1"),
        ("<lora:x:1:abc>", "<lora:x:1:abc>: the unet weight 'abc' is not a finite number; write e.g. 0.8 or -1"),
        ("<lora:x:inf>", "<lora:x:inf>: the te weight 'inf' is not a finite number; write e.g. 0.8 or -1"),
        ("<lora:x:nan>", "<lora:x:nan>: the te weight 'nan' is not a finite number; write e.g. 0.8 or -1"),
        ("<lora:x:te=>", "<lora:x:te=>: the te weight '' is not a finite number; write e.g. 0.8 or -1"),
        (
            "<lora:x:unet=1e999>",
            "<lora:x:unet=1e999>: the unet weight '1e999' is not a finite number; write e.g. 0.8 or -1",
        ),
        ("<lora:x:abc:te=1>", "<lora:x:abc:te=1>: the te weight 'abc' is not a finite number; write e.g. 0.8 or -1"),
        (
            "<lora:x:1:abc:unet=1>",
            "<lora:x:1:abc:unet=1>: the unet weight 'abc' is not a finite number; write e.g. 0.8 or -1",
        ),
        ("<lora:x:a=b=c>", "<lora:x:a=b=c>: the te weight 'a=b=c' is not a finite number; write e.g. 0.8 or -1"),
        ("<lora::1>", "<lora::1> names no LoRA: write <lora:NAME> or <lora:NAME:WEIGHT>"),
        ("<lyco::1>", "<lyco::1> names no LoRA: write <lyco:NAME> or <lyco:NAME:WEIGHT>"),
        ("<lora:a=b:1>", "<lora:a=b:1>: a LoRA name cannot contain one '='; rename the file"),
    ],
)
def test_bad_lora_tags_are_refused(text, message):
    with pytest.raises(InvalidRequest) as exc:
        loras(text)
    assert exc.value.field == "prompt"
    assert exc.value.message == message


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("<lora:x:1:1:4>", "a third weight (4)"),
        ("<lora:x:1:1:4:5>", "a third weight (4)"),
        ("<lora:x:dyn=4>", "named argument dyn="),
        ("<lora:x:1:foo=2:dyn=4>", "named argument dyn="),
        ("<lora:x:lbw=OUTD>", "named argument lbw="),
    ],
)
def test_unsupported_lora_arguments_are_refused(text, what):
    with pytest.raises(InvalidRequest) as exc:
        loras(text)
    assert exc.value.field == "prompt"
    assert exc.value.message == (
        f"{text}: {what} is not supported; a LoRA tag takes <lora:NAME>, <lora:NAME:WEIGHT>, "
        "<lora:NAME:TE_WEIGHT:UNET_WEIGHT>, or te=WEIGHT / unet=WEIGHT (DyLoRA's dyn= is not supported)"
    )


def test_a_name_with_two_equals_signs_is_a_name():
    assert loras("<lora:a=b=c:0.5>") == (LoraTag("a=b=c", 0.5, 0.5),)


# -- every input ----------------------------------------------------------------------------------------------------

FUZZ_PIECES = [*"()[]:|\\<>", *"ab1.5 ", "BREAK", "lora", "\n", "2", "e", "=", "-", "0.5"]


def _check_any_prompt(text: str) -> None:
    try:
        fragments = parse_attention(text)
    except InvalidRequest:
        pass
    else:
        assert fragments
        assert all(isinstance(fragment, Fragment) for fragment in fragments)
    for steps in (1, 3):
        try:
            entries = prompt_schedule(text, steps)
        except InvalidRequest:
            continue
        ends = [entry.end_at_step for entry in entries]
        assert ends == sorted(set(ends))
        assert ends[-1] == steps
        assert ends[0] >= 1
        for step in range(steps):
            step_prompt(entries, step)
    remaining, tags = extract_network_tags(text)
    assert len(remaining) <= len(text)
    with contextlib.suppress(InvalidRequest):
        lora_tags(tags)


def test_any_string_parses_or_is_refused_with_invalid_request():
    rng = random.Random(1111)
    for _ in range(2000):
        _check_any_prompt("".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randint(0, 30))))


@pytest.mark.parametrize(
    "text",
    [
        "(" * 10_000,
        ")" * 10_000,
        "[" * 10_000,
        "]" * 10_000,
        "(" * 10_000 + "x" + ")" * 10_000,
        "[" * 10_000 + "x" + "]" * 10_000,
        "(a" * 10_000,
        "([" * 5_000 + "x" + "])" * 5_000,
        "[a|" * 5_000,
        "\\" * 10_001,
        "<" * 10_000,
        "<lora:" * 10_000,
    ],
)
def test_ten_thousand_brackets(text):
    # Each of these runs in milliseconds (every pass is linear, nesting is bounded); no time is asserted.
    _check_any_prompt(text)
