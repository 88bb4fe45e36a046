"""The names in a topic's name, and finding them across Latin and Cyrillic (alerts.names)."""

from __future__ import annotations

import pytest

from alerts.names import distinctive_names, name_as_written, names_in, text_keys, topic_names

ABU_DHABI = ("abu", "dabi")


@pytest.mark.parametrize(
    ("name", "description", "names"),
    [
        # a name opening the topic's name: the description writes it mid-sentence
        ("Abu Dhabi peace talks", "Negotiations held in Abu Dhabi.", [ABU_DHABI]),
        # "Abu" is only ever first, but it is capitalised and runs into "Dhabi"
        ("Abu Dhabi talks", "talks", [ABU_DHABI]),
        ("Donbas withdrawal terms", "The parts of the Donbas still held.", [("donbas",)]),
        # "Security" is capitalised only where a sentence starts
        ("Security guarantees for Ukraine", "Security guarantees. Who guarantees Ukraine?",
         [("ukraine",)]),
        ("Мирные переговоры в Абу-Даби", "Переговоры России и Украины в Абу-Даби.", [ABU_DHABI]),
        ("peace talks", "Talks. More talks.", []),
    ],
)  # fmt: skip
def test_the_names_in_a_topics_name_are_told_by_their_capitals(
    name: str, description: str, names: list[tuple[str, ...]]
) -> None:
    assert topic_names(name, description) == names


@pytest.mark.parametrize(
    ("text", "name", "named"),
    [
        ("Переговоры в Абу-Даби завершились", ABU_DHABI, True),
        ("Розділ про гарантії безпеки в проєкті з Абу-Дабі", ABU_DHABI, True),
        ("Was das Abu-Dhabi-Papier sagt", ABU_DHABI, True),
        ("an abuse of Dhabi's rules", ABU_DHABI, False),  # a short key matches whole only
        ("Abu talks, then Dhabi", ABU_DHABI, False),  # the words must follow each other
        ("Вывод войск из Донбасса", ("donbas",), True),  # inflected
        ("Donbass-Region", ("donbas",), True),
        ("виведення з Донбасу", ("donbas",), True),
        ("Rückzug aus dem Gebiet Donezk", ("doneck",), True),  # ts, tz and z fold together
        ("Донецьк", ("doneck",), True),  # the soft sign is no word break
        ("Київ and Kyiv", ("kiv",), True),
        ("Dubai", ABU_DHABI, False),
    ],
)
def test_a_name_is_found_in_any_script_and_inflection(
    text: str, name: tuple[str, ...], named: bool
) -> None:
    assert (names_in(text_keys(text), [name]) == [name]) is named


def test_only_names_no_other_topic_names_set_a_topic_apart() -> None:
    others = ("Donbas withdrawal terms", "Moscow demands that Ukraine leave the Donbas.")
    assert distinctive_names("Abu Dhabi talks on Donbas", "Talks in Abu Dhabi.", others) == (
        ABU_DHABI,
    )
    # the other topic writes the name in another script: still shared
    assert (
        distinctive_names("Abu Dhabi talks", "Talks in Abu Dhabi.", ("Переговоры в Абу-Даби",))
        == ()
    )


def test_a_found_name_is_reported_as_the_topics_name_writes_it() -> None:
    assert name_as_written("Abu Dhabi peace talks", ABU_DHABI) == "Abu Dhabi"
    assert name_as_written("Talks in Абу-Даби", ABU_DHABI) == "Абу-Даби"
