"""The sandbox's Twilio-shaped Messages endpoints: basic auth, Twilio's error body, paging by
next_page_uri, the To / From / DateSent filters, and sends added to the history."""

from __future__ import annotations

from datetime import UTC, datetime

KEY = "k"
SID = "AC" + "e" * 32
NUMBER = "+15550107777"
LIST = f"/twilio/2010-04-01/Accounts/{SID}/Messages.json"


async def test_calls_need_the_accounts_basic_auth(http):
    for auth in ((SID, "wrong"), ("AC" + "f" * 32, KEY)):
        response = await http.get(LIST, params={"To": NUMBER}, auth=auth)
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == 20003 and body["status"] == 401
        assert set(body) == {"code", "message", "more_info", "status"}
    bearer = await http.get(LIST, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 401


async def test_pages_follow_next_page_uri_to_the_end(http):
    seen, uri = [], f"{LIST}?To={NUMBER.replace('+', '%2B')}&PageSize=2"
    while uri:
        response = await http.get(uri, auth=(SID, KEY))
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["page_size"] == 2 and len(page["messages"]) <= 2
        seen += page["messages"]
        following = page["next_page_uri"]
        uri = f"/twilio{following}" if following else None
    assert seen and all(m["to"] == NUMBER for m in seen)
    assert all(m["direction"] == "outbound-api" for m in seen)
    assert len({m["sid"] for m in seen}) == len(seen)
    dates = [m["date_sent"] for m in seen]
    assert all(d.endswith("+0000") for d in dates)


async def test_a_send_is_form_encoded_and_joins_the_history(http, state):
    form = {"To": NUMBER, "From": "+15005550006", "Body": "See you at 5"}
    response = await http.post(LIST, data=form, auth=(SID, KEY))
    assert response.status_code == 201, response.text
    sent = response.json()
    assert sent["sid"].startswith("SM") and sent["direction"] == "outbound-api"
    assert sent["to"] == NUMBER and sent["body"] == "See you at 5"
    today = datetime.now(UTC).date().isoformat()
    listed = await http.get(LIST, params={"To": NUMBER, "DateSent>": today}, auth=(SID, KEY))
    assert [m["sid"] for m in listed.json()["messages"]] == [sent["sid"]]
    garbled = await http.get(LIST, params={"DateSent>": "02 Dec"}, auth=(SID, KEY))
    assert garbled.status_code == 400 and garbled.json()["code"] == 20001
    assert state.count("sms", "send") == 1


async def test_a_send_without_a_sender_or_a_valid_number_is_a_twilio_400(http):
    response = await http.post(LIST, data={"To": NUMBER, "Body": "x"}, auth=(SID, KEY))
    assert response.status_code == 400 and response.json()["code"] == 21603
    bad = {"To": "not a number", "From": "+15005550006", "Body": "x"}
    response = await http.post(LIST, data=bad, auth=(SID, KEY))
    assert response.status_code == 400 and response.json()["code"] == 21211


async def test_faults_armed_for_sms_apply_in_twilios_shape(http, state):
    state.add_fault("sms", "rate_limit", times=1, kind="list", retry_after=3)
    response = await http.get(LIST, params={"To": NUMBER}, auth=(SID, KEY))
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert response.json()["code"] == 20429
    state.add_fault("sms", "error", times=1, kind="send")
    form = {"To": NUMBER, "From": "+15005550006", "Body": "x"}
    response = await http.post(LIST, data=form, auth=(SID, KEY))
    assert response.status_code == 500 and response.json()["code"] == 20500
