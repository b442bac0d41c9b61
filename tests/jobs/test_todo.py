import pytest

from jobs.errors import InvalidInputError
from jobs.patch.todo import MAX_SLUG_CHARS, TodoItem, parse_todo


def _titles(text: str) -> list[str]:
    return [item.title for item in parse_todo(text)]


@pytest.mark.parametrize("line", ["- fix it", "* fix it", "+ fix it", "1. fix it", "12) fix it",
                                  "- [ ] fix it", "* [ ] fix it", "3. [ ] fix it"])
def test_each_marker_form_is_an_item(line):
    (item,) = parse_todo(line)
    assert item == TodoItem(line_no=1, title="fix it", body="", slug="fix-it")


def test_items_keep_file_order_and_line_numbers():
    items = parse_todo("- first\n\n1. second\n* third\n")
    assert [(i.line_no, i.title) for i in items] == [(1, "first"), (3, "second"), (4, "third")]


def test_indented_lines_belong_to_the_item_above_and_are_dedented():
    (item, nxt) = parse_todo(
        "- fix the login bug\n"
        "    it fails when the password has a space\n"
        "\n"
        "    see issue 12:\n"
        "      - nested detail stays in the body\n"
        "\n"
        "\n"
        "- next\n"
    )
    assert item.body == ("it fails when the password has a space\n\nsee issue 12:\n"
                         "  - nested detail stays in the body")
    assert item.text == f"fix the login bug\n{item.body}"
    assert nxt.title == "next" and nxt.body == "" and nxt.text == "next"


def test_tabs_count_as_indentation():
    (item,) = parse_todo("- fix\n\tdetail\n")
    assert item.body == "detail"


def test_checked_items_and_their_bodies_are_skipped():
    items = parse_todo("- [x] done\n  with a body\n- [X] also done\n- [ ] open\n")
    assert [(i.title, i.body) for i in items] == [("open", "")]


def test_headings_and_text_outside_items_are_ignored():
    text = ("# Nightly TODO\n"
            "Some intro text about the repository.\n"
            "\n"
            "## Backend\n"
            "- fix the parser\n"
            "A note that is not indented, so not part of the item.\n"
            "* * *\n"
            "## Frontend\n"
            "- fix the button\n")
    items = parse_todo(text)
    assert [(i.title, i.body) for i in items] == [("fix the parser", ""), ("fix the button", "")]


def test_bullets_inside_a_top_level_code_fence_are_not_items():
    text = "- real item\n```\n- example in a code block\n```\n- another\n"
    assert _titles(text) == ["real item", "another"]


def test_a_fence_indented_under_an_item_is_part_of_its_body():
    (item,) = parse_todo("- fix\n  ```\n  - code\n  ```\n")
    assert item.body == "```\n- code\n```"


def test_text_that_only_looks_like_a_marker_is_not_an_item():
    assert _titles("- real\n-not a marker\n1.5 is a version\n") == ["real"]


def test_a_list_without_markers_is_one_item_per_unindented_line():
    text = "# heading is still ignored\nfix the login bug\n  details\n  - sub point\n\nadd tests\n"
    items = parse_todo(text)
    assert [(i.line_no, i.title, i.body) for i in items] == [
        (2, "fix the login bug", "details\n- sub point"), (6, "add tests", "")]


def test_with_markers_present_unmarked_lines_are_never_items():
    assert _titles("Things to do:\n- one\nstray line\n") == ["one"]


def test_an_indented_list_still_counts_as_marked():
    assert _titles("  - one\n  - two\n") == ["one", "two"]


def test_slugs_are_lowercase_ascii_words_joined_by_dashes():
    items = parse_todo("- Fix the Login bug!!\n- Café crème: naïve ünïcode\n- a/b (c) d_e\n")
    assert [i.slug for i in items] == ["fix-the-login-bug", "cafe-creme-naive-unicode", "a-b-c-d-e"]


def test_slugs_fall_back_to_the_item_position_when_nothing_ascii_is_left():
    items = parse_todo("- one\n- 修复登录\n- !!!\n")
    assert [i.slug for i in items] == ["one", "item-2", "item-3"]


def test_clashing_slugs_get_numbered_suffixes():
    items = parse_todo("- Fix bug\n- fix bug!\n- FIX  BUG\n- fix bug 2\n- item 5\n- ???\n")
    assert [i.slug for i in items] == ["fix-bug", "fix-bug-2", "fix-bug-3", "fix-bug-2-2",
                                       "item-5", "item-6"]


def test_long_titles_are_cut_at_a_word_boundary():
    title = "refactor the session handling so that expired tokens are refreshed silently"
    (item,) = parse_todo(f"- {title}")
    assert len(item.slug) <= MAX_SLUG_CHARS
    assert item.slug == "refactor-the-session-handling-so-that-expired"


def test_long_clashing_slugs_stay_within_the_limit_with_their_suffix():
    title = "x" * 60
    items = parse_todo(f"- {title}\n- {title}\n")
    assert [len(i.slug) for i in items] == [MAX_SLUG_CHARS, MAX_SLUG_CHARS]
    assert items[1].slug.endswith("-2") and items[0].slug != items[1].slug


@pytest.mark.parametrize("text", ["", "   \n\t\n", "\ufeff", "# Only a heading\n\n  indented\n"])
def test_an_empty_list_says_how_to_write_one(text):
    with pytest.raises(InvalidInputError) as exc:
        parse_todo(text)
    assert exc.value.field == "todo"
    assert "no items" in exc.value.message and "- fix the login bug" in exc.value.message


def test_a_list_of_only_done_items_has_no_items():
    with pytest.raises(InvalidInputError, match="no items"):
        parse_todo("- [x] done\n- [x] also done\n")


def test_too_many_items_says_the_count_and_the_limit():
    with pytest.raises(InvalidInputError) as exc:
        parse_todo("".join(f"- item {n}\n" for n in range(5)), max_items=3)
    assert exc.value.field == "todo"
    assert "5" in exc.value.message and "limit is 3" in exc.value.message


def test_done_items_do_not_count_towards_the_limit():
    text = "".join(f"- [x] done {n}\n" for n in range(5)) + "- open\n"
    assert [item.title for item in parse_todo(text, max_items=1)] == ["open"]


@pytest.mark.parametrize("line", ["-", "- ", "1.", "- [ ]"])
def test_an_item_without_a_title_names_its_line(line):
    with pytest.raises(InvalidInputError) as exc:
        parse_todo(f"- fine\n{line}\n")
    assert exc.value.field == "todo"
    assert exc.value.message.startswith("line 2:") and repr(line.strip()) in exc.value.message


def test_windows_line_endings_and_a_bom_are_accepted():
    items = parse_todo("\ufeff- one\r\n  detail\r\n- two\r\n")
    assert [(i.title, i.body) for i in items] == [("one", "detail"), ("two", "")]
