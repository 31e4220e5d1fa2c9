"""Stamdata og fakturaformat in the portal (S10): master data and each account's invoice
format changed through the pages, with the ETag the form was read at; a stale edit (two tabs,
one after the other or at once) is never written over the other — exactly one wins and the
other sees what changed and may redo it; billing's refusals are words next to the field, and
who may change what is billing's decision, shown in words."""

# ruff: noqa: F811 - fixtures are imported and used by name
from __future__ import annotations

import asyncio

import httpx
import pytest

from services.billing.models import Account, Customer
from tests.integration.billing_fixtures import billing_db  # noqa: F401 - fixture
from tests.portal.billing_forms import Browsers, browsers, form_fields, signed_in, text_of  # noqa: F401
from tests.security.world import PARENT, SUBSIDIARY, company_group


@pytest.fixture
def portal_transports(identity_transport, billing_transport) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": identity_transport, "billing": billing_transport}


async def customer(billing_db, cvr: str) -> Customer:
    async with billing_db.transaction() as session:
        found = await session.get(Customer, cvr)
    assert found is not None
    return found


async def account(billing_db, number: str) -> Account:
    async with billing_db.transaction() as session:
        found = await session.get(Account, number)
    assert found is not None
    return found


async def administrator(browser, db, clock, sealer, grants=None):  # noqa: ANN001, ANN201 - test helper
    await company_group(db, clock)
    return await signed_in(
        browser,
        db,
        clock,
        sealer,
        grants=grants or {PARENT: "all", SUBSIDIARY: "all"},
        functions=["master_data"],
    )


async def test_the_page_shows_each_companys_master_data_with_the_rules_and_its_accounts(
    db, clock, sealer, portal, billing_db
) -> None:
    await administrator(portal, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: ["10000021"]})
    page = await portal.get("/stamdata")
    assert page.status_code == 200, page.text
    words = text_of(page.text)
    parent = await customer(billing_db, PARENT)
    assert parent.street in words and parent.postal_code in words and parent.contact_email in words
    assert "Postnummeret er dansk: fire cifre" in words and "Telefonnummeret er dansk" in words
    assert "adgang til hele virksomheden (alle konti)" in words
    assert f'href="/stamdata/{PARENT}"' in page.text
    # The subsidiary, granted one account: no form that billing would refuse, a sentence instead.
    assert f'href="/stamdata/{SUBSIDIARY}"' not in page.text
    assert "kan derfor ikke ændre dens stamdata" in words
    assert (
        'href="/stamdata/konto/10000021"' in page.text and 'href="/stamdata/konto/10000022"' not in page.text
    )
    assert page.text.count("<h1") == 1


async def test_master_data_changed_through_the_page_is_saved_in_billing(
    db, clock, sealer, portal, billing_db
) -> None:
    await administrator(portal, db, clock, sealer)
    form = form_fields((await portal.get(f"/stamdata/{SUBSIDIARY}")).text, f"/stamdata/{SUBSIDIARY}")
    before = await customer(billing_db, SUBSIDIARY)
    assert form["etag"] == f'"{before.master_data_version}"'
    saved = await portal.post(
        f"/stamdata/{SUBSIDIARY}",
        data={
            **form,
            "city": "Odense C",
            "postal_code": "5000",
            "contact_phone": "+45 66 12 34 56",
            "language": "en",
        },
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/stamdata?gemt=stamdata", text_of(
        saved.text
    )
    after = await customer(billing_db, SUBSIDIARY)
    assert (after.city, after.postal_code, after.contact_phone) == ("Odense C", "5000", "+4566123456")
    assert after.language == "en"  # the invoices' language, from the next invoice on
    assert after.master_data_version == before.master_data_version + 1
    overview = text_of((await portal.get(saved.headers["location"])).text)
    assert "Stamdata er gemt." in overview and "Sprog på fakturaer Engelsk" in overview


async def test_wrong_master_data_is_refused_in_words_next_to_each_field(
    db, clock, sealer, portal, billing_db
) -> None:
    await administrator(portal, db, clock, sealer)
    form = form_fields((await portal.get(f"/stamdata/{PARENT}")).text, f"/stamdata/{PARENT}")
    before = await customer(billing_db, PARENT)
    refused = await portal.post(
        f"/stamdata/{PARENT}",
        data={**form, "postal_code": "800", "contact_phone": "12345", "contact_email": "ikke-en-adresse"},
    )
    assert refused.status_code == 422
    assert 'id="f-postal_code-error">Skriv et dansk postnummer med fire cifre' in refused.text
    assert 'id="f-contact_phone-error">Skriv et dansk telefonnummer med otte cifre' in refused.text
    assert 'id="f-contact_email-error">Skriv en gyldig e-mailadresse' in refused.text
    assert 'value="800"' in refused.text  # what was typed stays
    assert (await customer(billing_db, PARENT)).master_data_version == before.master_data_version


async def test_a_stale_edit_in_a_second_tab_shows_what_changed_and_can_be_redone_on_the_current_version(
    db, clock, sealer, portal, billing_db
) -> None:
    await administrator(portal, db, clock, sealer)
    path = f"/stamdata/{PARENT}"
    first_tab = form_fields((await portal.get(path)).text, path)
    second_tab = form_fields((await portal.get(path)).text, path)
    assert first_tab["etag"] == second_tab["etag"]
    original_name = first_tab["contact_name"]
    won = await portal.post(path, data={**first_tab, "contact_name": "Første Fane"})
    assert won.status_code == 303
    stale = await portal.post(path, data={**second_tab, "contact_name": "Anden Fane", "city": "Vejle"})
    assert stale.status_code == 409
    words = text_of(stale.text)
    assert "Nogen har ændret oplysningerne i mellemtiden" in words
    assert f"Kontaktperson (ændret i mellemtiden) {original_name} Første Fane Anden Fane" in words
    assert (await customer(billing_db, PARENT)).contact_name == "Første Fane"
    # Redo: the form holds what the user typed, on the current version.
    redo = form_fields(stale.text, path)
    assert redo["contact_name"] == "Anden Fane" and redo["city"] == "Vejle"
    assert redo["etag"] == f'"{(await customer(billing_db, PARENT)).master_data_version}"'
    done = await portal.post(path, data=redo)
    assert done.status_code == 303
    now = await customer(billing_db, PARENT)
    assert (now.contact_name, now.city) == ("Anden Fane", "Vejle")


async def test_two_tabs_posting_the_same_version_at_once_let_exactly_one_win(
    db, clock, sealer, portal, billing_db
) -> None:
    await administrator(portal, db, clock, sealer)
    path = f"/stamdata/{SUBSIDIARY}"
    tabs = [form_fields((await portal.get(path)).text, path) for _ in range(2)]
    answers = await asyncio.gather(
        portal.post(path, data={**tabs[0], "street": "Samtidig Vej 1"}),
        portal.post(path, data={**tabs[1], "street": "Samtidig Vej 2"}),
    )
    assert sorted(a.status_code for a in answers) == [303, 409], [text_of(a.text)[:300] for a in answers]
    winner = next(i for i, a in enumerate(answers) if a.status_code == 303)
    loser = answers[1 - winner]
    assert (await customer(billing_db, SUBSIDIARY)).street == f"Samtidig Vej {winner + 1}"
    assert f"Samtidig Vej {winner + 1} Samtidig Vej {2 - winner}" in text_of(loser.text)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        (
            {"format": "pdf_email", "email": "faktura@firma.example"},
            ("pdf_email", "faktura@firma.example", None, None, None),
        ),
        ({"format": "oioubl", "gln": "5790000435968"}, ("oioubl", None, "5790000435968", None, None)),
        (
            {"format": "peppol", "scheme": "0184", "endpoint_id": "DK35657193"},
            ("peppol", None, None, "0184", "35657193"),
        ),
        ({"format": "paper", "email": "not sent with paper"}, ("paper", None, None, None, None)),
    ],
)
async def test_each_invoice_format_is_set_through_one_form_from_the_next_invoice(
    db, clock, sealer, portal, billing_db, typed, stored
) -> None:
    await administrator(portal, db, clock, sealer)
    path = "/stamdata/konto/10000012"
    page = await portal.get(path)
    assert "Et nyt format gælder fra næste faktura." in text_of(page.text)
    assert "<legend>Hvordan skal kontoen have sine fakturaer?</legend>" in page.text
    saved = await portal.post(path, data={**form_fields(page.text, path), **typed})
    assert saved.status_code == 303, text_of(saved.text)
    found = await account(billing_db, "10000012")
    assert (
        found.invoice_format,
        found.invoice_email,
        found.invoice_gln,
        found.peppol_scheme,
        found.peppol_id,
    ) == stored


@pytest.mark.parametrize(
    ("typed", "field", "words"),
    [
        ({"format": "oioubl", "gln": "5790000435967"}, "gln", "Skriv et gyldigt EAN/GLN-nummer"),
        (
            {"format": "pdf_email", "email": "ikke-en-adresse"},
            "email",
            "Skriv en gyldig e-mailadresse til fakturaerne",
        ),
        (
            {"format": "peppol", "scheme": "0184", "endpoint_id": "12345678"},
            "endpoint_id",
            "Skriv et gyldigt id",
        ),
        ({"format": "peppol", "scheme": "", "endpoint_id": "12345678"}, "scheme", "Vælg en Peppol-ordning."),
        ({"format": ""}, "format", "Vælg hvordan kontoen skal have sine fakturaer."),
    ],
)
async def test_a_wrong_invoice_format_is_refused_in_words_next_to_the_field(
    db, clock, sealer, portal, billing_db, typed, field, words
) -> None:
    await administrator(portal, db, clock, sealer)
    path = "/stamdata/konto/10000022"
    before = await account(billing_db, "10000022")
    form = form_fields((await portal.get(path)).text, path)
    refused = await portal.post(path, data={**form, **typed})
    assert refused.status_code == 422
    assert f'id="f-{field}-error">{words}' in refused.text
    assert (await account(billing_db, "10000022")).invoice_format_version == before.invoice_format_version


async def test_an_invoice_format_changed_meanwhile_shows_both_and_can_be_redone(
    db, clock, sealer, portal, billing_db
) -> None:
    await administrator(portal, db, clock, sealer)
    path = "/stamdata/konto/10000011"
    tabs = [form_fields((await portal.get(path)).text, path) for _ in range(2)]
    answers = await asyncio.gather(
        portal.post(path, data={**tabs[0], "format": "oioubl", "gln": "5790000435968"}),
        portal.post(path, data={**tabs[1], "format": "pdf_email", "email": "bogholderi@firma.example"}),
    )
    assert sorted(a.status_code for a in answers) == [303, 409]
    loser = next(a for a in answers if a.status_code == 409)
    assert "Din ændring af fakturaformatet for konto 10000011 er ikke gemt" in text_of(loser.text)
    assert "pdf_email" not in text_of(loser.text) and "oioubl" not in text_of(loser.text)  # formats in words
    redo = form_fields(loser.text, path)
    assert (await portal.post(path, data=redo)).status_code == 303
    final = await account(billing_db, "10000011")
    expected = "oioubl" if answers[1].status_code == 303 else "pdf_email"
    assert final.invoice_format == expected


async def test_who_may_change_what_is_decided_for_each_user_at_the_same_time(
    db, clock, sealer, browsers: Browsers, billing_db
) -> None:
    """S10, S14, in parallel: a user with the whole company changes its master data; a colleague
    limited to one account may not (a 403 page in words, billing decides) but changes that
    account's invoice format, and finds another account's not at all; a user without the
    master_data function gets a 403 page in words."""
    await company_group(db, clock)
    whole, limited, no_function = browsers(), browsers(), browsers()
    await signed_in(whole, db, clock, sealer, grants={SUBSIDIARY: "all"}, functions=["master_data"])
    await signed_in(limited, db, clock, sealer, grants={SUBSIDIARY: ["10000021"]}, functions=["master_data"])
    await signed_in(no_function, db, clock, sealer, grants={SUBSIDIARY: "all"}, functions=["orders"])
    company_path, own_account, other_account = (
        f"/stamdata/{SUBSIDIARY}",
        "/stamdata/konto/10000021",
        "/stamdata/konto/10000011",
    )
    whole_form = form_fields((await whole.get(company_path)).text, company_path)
    limited_format = form_fields((await limited.get(own_account)).text, own_account)
    answers = await asyncio.gather(
        whole.post(company_path, data={**whole_form, "contact_name": "Hele Firmaet"}),
        limited.get(company_path),
        limited.post(
            company_path,
            data={**whole_form, "csrf_token": limited_format["csrf_token"], "contact_name": "Kun En Konto"},
        ),
        limited.post(own_account, data={**limited_format, "format": "paper"}),
        limited.get(other_account),
        no_function.get("/stamdata"),
        no_function.get(own_account),
    )
    statuses = [a.status_code for a in answers]
    assert statuses == [303, 403, 403, 303, 404, 403, 403], [text_of(a.text)[:200] for a in answers]
    for refused in answers[1:3]:
        assert "du kun har adgang til nogle af dens konti" in text_of(refused.text)
    for refused in answers[5:]:
        assert "Du har ikke adgang til stamdata" in text_of(refused.text)
    assert (await customer(billing_db, SUBSIDIARY)).contact_name == "Hele Firmaet"
    assert (await account(billing_db, "10000021")).invoice_format == "paper"
