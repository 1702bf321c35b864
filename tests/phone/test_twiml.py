"""Every TwiML document the phone channel builds is valid by Twilio's rules."""

from __future__ import annotations

import pytest
from twimlcheck import check_twiml

from handraise.phone import twiml
from handraise.sim.twiml import parse_media_twiml, parse_twiml

URLS = twiml.PhoneUrls("https://hr.example.org")


def _join(*, host: bool, star: bool = False) -> twiml.ConferenceJoin:
    return twiml.ConferenceJoin(
        conference_name="handraise-rabc", label="pabc123", muted=not host, host=host,
        status_callback=URLS.conference_events("rabc"), wait_url=URLS.wait(),
        action_url=URLS.after_dial("rabc", "pabc123"), end_on_exit=host, hangup_on_star=star,
    )


CALL_DOCUMENTS = {
    "ask first": twiml.ask_for_code(URLS.incoming(attempt=1), attempt=0),
    "ask again": twiml.ask_for_code(URLS.incoming(attempt=2), attempt=1, wrong=True),
    "goodbye": twiml.goodbye_after_failures(),
    "closed": twiml.room_closed(),
    "host join": twiml.join_conference(_join(host=True), before=("Welcome, host.",)),
    "star join": twiml.join_conference(_join(host=False, star=True)),
    "prejoin stream": twiml.prejoin(URLS.prejoin("rabc", "p1"), raise_keys="*1",
                                    stream_url=URLS.media_stream(),
                                    stream_params={"room": "rabc", "participant": "p1"}),
    "prejoin star": twiml.prejoin(URLS.prejoin("rabc", "p1"), raise_keys="*1"),
    "participant join": twiml.participant_join(_join(host=False), hand_line="Raised.",
                                               pin="418529", companion_url=URLS.companion()),
    "participant join no pin": twiml.participant_join(_join(host=False), hand_line=None, pin=None,
                                                      companion_url=None),
    "host prompt": twiml.host_prompt(URLS.prompt_keys("rabc", "p1"), URLS.rejoin("rabc", "p1"),
                                     raise_keys="*1", lower_keys="*2"),
    "star menu": twiml.star_menu(URLS.star_keys("rabc", "p1"), URLS.rejoin("rabc", "p1")),
    "say then redirect": twiml.say_then_redirect("Back you go.", URLS.rejoin("rabc", "p1")),
    "meeting over": twiml.meeting_over(),
    "meeting full": twiml.meeting_full(250),
    "redirect": twiml.redirect(URLS.prompt("rabc", "p1")),
    "apology": twiml.apology(),
    "empty": twiml.empty(),
}
MEDIA_DOCUMENTS = {
    "wait": twiml.wait_music(),
    **{f"announce {k}": twiml.announcement(k, 2) for k in twiml.ANNOUNCEMENTS},
    "announce unknown": twiml.announcement("nope"),
}


@pytest.mark.parametrize("name", sorted(CALL_DOCUMENTS))
def test_call_documents_follow_nesting_and_attribute_rules(name: str) -> None:
    check_twiml(CALL_DOCUMENTS[name])
    parse_twiml(CALL_DOCUMENTS[name])  # and the emulator runs it without an error code


@pytest.mark.parametrize("name", sorted(MEDIA_DOCUMENTS))
def test_wait_and_announce_documents_hold_only_media_verbs(name: str) -> None:
    check_twiml(MEDIA_DOCUMENTS[name], media_only=True)
    parse_media_twiml(MEDIA_DOCUMENTS[name])


def test_checker_refuses_a_gather_around_a_dial() -> None:
    bad = ('<Response><Gather><Dial><Conference>x</Conference></Dial></Gather></Response>')
    with pytest.raises(AssertionError, match="cannot be nested"):
        check_twiml(bad)


def test_checker_refuses_a_bad_beep_value() -> None:
    with pytest.raises(AssertionError, match="beep"):
        check_twiml('<Response><Dial><Conference beep="loud">x</Conference></Dial></Response>')


def test_code_gather_nests_its_prompt_and_asks_for_six_digits() -> None:
    root = check_twiml(CALL_DOCUMENTS["ask first"])
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("numDigits") == "6"
    assert gather.get("actionOnEmptyResult") == "true"  # silence counts as a wrong attempt
    say = gather.find("Say")
    assert say is not None and "six digit" in (say.text or "")


def test_prejoin_streams_with_parameters_then_gathers_two_keys_without_finish_key() -> None:
    root = check_twiml(CALL_DOCUMENTS["prejoin stream"])
    assert [el.tag for el in root] == ["Start", "Gather"]
    params = {p.get("name"): p.get("value") for p in root.iter("Parameter")}
    assert params == {"room": "rabc", "participant": "p1"}
    stream = root.find("Start/Stream")
    assert stream is not None and stream.get("url") == "wss://hr.example.org/voice/stream"
    gather = root.find("Gather")
    assert gather is not None
    assert (gather.get("numDigits"), gather.get("finishOnKey")) == ("2", "")
    assert [el.tag for el in check_twiml(CALL_DOCUMENTS["prejoin star"])] == ["Gather"]


def test_participant_joins_muted_without_starting_and_with_our_wait_url() -> None:
    root = check_twiml(CALL_DOCUMENTS["participant join"])
    conf = root.find("Dial/Conference")
    assert conf is not None
    assert conf.get("muted") == "true"
    assert conf.get("startConferenceOnEnter") == "false"
    assert conf.get("waitUrl") == "https://hr.example.org/voice/wait"
    assert conf.get("participantLabel") == "pabc123"
    assert set((conf.get("statusCallbackEvent") or "").split()) >= {"join", "leave", "mute", "hold",
                                                                   "end"}
    says = " ".join(s.text or "" for s in root.iter("Say"))
    assert "4, 1, 8, 5, 2, 9" in says  # the PIN digit by digit
    assert "hr dot example dot org slash join" in says and "press star 0" in says


def test_host_joins_unmuted_starts_and_ends_the_conference() -> None:
    conf = check_twiml(CALL_DOCUMENTS["host join"]).find("Dial/Conference")
    assert conf is not None
    assert (conf.get("muted"), conf.get("startConferenceOnEnter"),
            conf.get("endConferenceOnExit")) == ("false", "true", "true")


def test_star_mode_dials_with_hangup_on_star_and_stream_mode_does_not() -> None:
    star = check_twiml(CALL_DOCUMENTS["star join"]).find("Dial")
    plain = check_twiml(CALL_DOCUMENTS["participant join"]).find("Dial")
    assert star is not None and plain is not None
    assert star.get("hangupOnStar") == "true"
    assert plain.get("hangupOnStar") is None


def test_announcement_says_the_position() -> None:
    root = check_twiml(twiml.announcement("raised", 3), media_only=True)
    assert [s.text for s in root.iter("Say")] == ["Hand raised. You are number 3 in line."]


def test_a_full_meeting_is_told_so_then_hung_up() -> None:
    root = check_twiml(twiml.meeting_full(250))
    assert [el.tag for el in root] == ["Say", "Hangup"]
    assert root[0].text == ("This meeting is full: it already has 250 callers, the most a call "
                            "can have. Please try again later.")


def test_the_spoken_answers_of_the_keypad() -> None:
    from handraise.phone.twiml import keys_line, queue_line, spoken_name, where_line

    assert keys_line([("*1", "raise your hand"), ("#2", "lower it"), ("0", "hear this")]) == \
        "Press star 1 to raise your hand, pound 2 to lower it, 0 to hear this."
    assert where_line(3) == "Your hand is raised. You are number 3 in line."
    assert where_line(None) == "Your hand is not raised."
    assert where_line(None, speaking=True).startswith("You are live")
    assert queue_line(3, spoken_name("Caller 4821")) == "Three hands up. Next: caller ending 4 8 2 1."
    assert queue_line(1, "Ada") == "One hand up. Next: Ada."
    assert queue_line(0, None) == "No hands up." and queue_line(21, "Bo").startswith("21 hands up.")
    root = check_twiml(twiml.say("You're next."))
    assert [s.text for s in root.iter("Say")] == ["You're next."]
    assert list(check_twiml(twiml.say("")).iter("Say")) == []


def test_the_host_joins_with_a_stream_when_asked() -> None:
    join = twiml.ConferenceJoin(conference_name="handraise-r1", label="ph1", status_callback="https://hr.example.org/cb",
                                wait_url="https://hr.example.org/voice/wait",
                                action_url="https://hr.example.org/voice/after-dial", muted=False, host=True)
    root = check_twiml(twiml.join_conference(join, stream_url="wss://hr.example.org/voice/stream",
                                             stream_params={"room": "r1", "participant": "ph1"}))
    stream = root.find("Start/Stream")
    assert stream is not None and stream.get("url") == "wss://hr.example.org/voice/stream"
    assert {p.get("name"): p.get("value") for p in stream.iter("Parameter")} == {
        "room": "r1", "participant": "ph1"}
    assert [child.tag for child in root] == ["Start", "Dial"]
