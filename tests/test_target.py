"""The target of a multi-message template: its structure and the text the optimizer rewrites."""

from __future__ import annotations

import pytest

from gpo_engine.target import TARGETS, Target, structure, structure_change, target_of

CHAT = (
    '{{role "system"}}You are terse.\n'
    '{{role "user"}}{{> _header}}Q: {{question}}\n'
)


def test_structure_lists_roles_partials_helpers_in_order() -> None:
    body = (
        '{{role "system"}}Be brief. {{json schema}}\n{{section "rules"}}No lies.\n'
        "{{history}}\n"
        '{{role "user"}}{{> _header tone=x}}{{#each shots}}{{this.q}}{{/each}}'
        '{{#ifEquals kind "a"}}A{{else}}B{{/ifEquals}}{{media url=photo}}{{question}}'
    )
    assert structure(body) == (
        '{{role "system"}}', "{{json schema}}", '{{section "rules"}}', "{{history}}",
        '{{role "user"}}', "{{> _header tone=x}}", "{{#each shots}}", "{{/each}}",
        '{{#ifEquals kind "a"}}', "{{else}}", "{{/ifEquals}}", "{{media url=photo}}",
    )


def test_structure_normalises_quotes_and_spacing() -> None:
    assert structure("{{ role 'system' }}x{{>_header}}{{~#if  a~}}y{{^}}z{{/if}}") == (
        '{{role "system"}}', "{{> _header}}", "{{#if a}}", "{{else}}", "{{/if}}")
    assert structure('{{role "system"}}x') == structure("{{ role 'system' }}x")


def test_structure_leaves_out_variables_comments_and_escaped_tags() -> None:
    body = ("{{question}} {{{raw}}} {{&raw}} {{lookup a b}} {{!-- {{role \"user\"}} --}} "
            "{{! note }} \\{{role \"user\"}}")
    assert structure(body) == ()
    # A variable may move within the text: the structure stays the same.
    assert structure("Q: {{q}} {{#if a}}x{{/if}}") == structure("{{#if a}}x{{/if}} {{q}} Q:")


def test_structure_change_names_what_was_dropped_added_or_reordered() -> None:
    before = structure(CHAT)
    assert structure_change(before, before) == ""
    assert structure_change(before, structure('{{role "system"}}x {{> _header}}')) == (
        'drops {{role "user"}}')
    assert structure_change(before, (*before, "{{history}}")) == "adds {{history}}"
    assert structure_change(before, before[::-1]) == (
        'reorders {{role "system"}} {{role "user"}} {{> _header}} '
        'into {{> _header}} {{role "user"}} {{role "system"}}')


def test_system_is_the_first_system_message_with_its_spacing_outside() -> None:
    body = '{{role "system"}}  You are terse.\n{{role "user"}}Q: {{q}}\n{{role "system"}}Late.'
    target = target_of(body)
    assert target == Target('{{role "system"}}  ', "You are terse.",
                            '\n{{role "user"}}Q: {{q}}\n{{role "system"}}Late.', "system")
    assert target.whole(target.text) == body
    assert target.whole("Be brief.") == (
        '{{role "system"}}  Be brief.\n{{role "user"}}Q: {{q}}\n{{role "system"}}Late.')


def test_system_message_ends_at_history() -> None:
    body = '{{role "system"}}Help.\n{{history}}\n{{role "user"}}{{q}}'
    target = target_of(body, "system")
    assert (target.text, target.after) == ("Help.", '\n{{history}}\n{{role "user"}}{{q}}')


def test_user_is_the_last_user_message() -> None:
    body = ('{{role "system"}}Sys.\n{{role "user"}}Example: 2+2\n{{role "model"}}4\n'
            '{{role "user"}}Solve: {{q}}\n')
    target = target_of(body, "user")
    assert target.which == "user" and target.text == "Solve: {{q}}"
    assert target.before.endswith('{{role "user"}}') and target.after == "\n"


def test_text_before_any_role_marker_is_a_user_message() -> None:
    body = 'Answer {{q}} now.\n{{role "model"}}Sure.'
    assert target_of(body, "user").text == "Answer {{q}} now."
    # ... and text after {{history}} is a model message, not a user one.
    assert target_of('{{role "user"}}Hi {{q}}\n{{history}}\nafter', "user").text == "Hi {{q}}"


def test_all_is_the_whole_body_unchanged() -> None:
    target = target_of(CHAT, "all")
    assert target == Target("", CHAT, "", "all")


@pytest.mark.parametrize("which", TARGETS)
def test_a_single_message_template_is_optimized_whole(which: str) -> None:
    # No role marker: every choice gives today's whole body, byte for byte.
    body = "Tell me about it.\nCountry: {{country}}\nAnswer:\n"
    assert target_of(body, which) == Target("", body, "", "all")


def test_without_a_system_message_system_falls_back_to_the_whole_body() -> None:
    body = '{{role "user"}}Q: {{q}}\n{{role "model"}}A:'
    assert target_of(body) == Target("", body, "", "all")
    # A blank system message has no text to rewrite either.
    blank = '{{role "system"}}  \n{{role "user"}}Q: {{q}}'
    assert target_of(blank).which == "all"
    # Nor does a template whose only user text is blank.
    assert target_of('{{role "system"}}Sys.\n{{role "user"}}\n', "user").which == "all"


def test_a_message_that_is_not_a_balanced_unit_falls_back_to_the_whole_body() -> None:
    # The block opens before the system marker and closes inside its text.
    body = '{{#if formal}}{{role "system"}}Be formal.{{/if}}{{role "user"}}{{q}}'
    assert target_of(body).which == "all"
    # A block opened in the message and closed in the next one.
    body = '{{role "system"}}Rules {{#if x}}one{{role "user"}}{{q}}{{/if}}'
    assert target_of(body).which == "all"
    # An {{else}} of a block around the message.
    body = '{{#if x}}{{role "system"}}A {{else}}B{{/if}}{{role "user"}}{{q}}'
    assert target_of(body).which == "all"
    # A block wholly inside the message is fine.
    body = '{{role "system"}}Rules {{#if x}}one{{else}}two{{/if}}.\n{{role "user"}}{{q}}'
    assert target_of(body).text == "Rules {{#if x}}one{{else}}two{{/if}}."


def test_role_markers_inside_comments_do_not_cut_messages() -> None:
    body = '{{role "system"}}Be brief. {{!-- {{role "user"}} --}}Really.\n{{role "user"}}{{q}}'
    assert target_of(body).text == 'Be brief. {{!-- {{role "user"}} --}}Really.'


def test_an_unknown_target_is_an_error() -> None:
    with pytest.raises(ValueError, match="choose one of system, user, all"):
        target_of(CHAT, "model")
