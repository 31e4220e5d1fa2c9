"""Settings of telephony subscriptions and of Personligt Nummer (S11): read with an ETag,
changed with a JSON merge patch and `If-Match`."""

import json
from typing import Any

from fastapi import APIRouter, Response

from services.billing.catalogue import BY_CODE
from services.billing.changes_api import tagged
from services.billing.deps import Caller, ChangesDep
from services.billing.models import Subscription
from services.billing.schemas import Id, IfMatch, SettingsOut
from services.billing.telephony import effective_settings
from shared.problems import PROBLEM
from shared.web import ClientAddress

router = APIRouter(
    tags=["telephony and Personligt Nummer"],
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 422: PROBLEM},
)


def settings_out(s: Subscription) -> SettingsOut:
    kind = BY_CODE[s.product_code].kind
    return SettingsOut(
        subscription_id=s.id,
        identifier=s.identifier,
        product_kind=kind,
        settings=effective_settings(kind, json.loads(s.settings)),
        version=s.settings_version,
    )


@router.get(
    "/v1/subscriptions/{subscription_id}/settings",
    summary="A subscription's telephony or Personligt Nummer settings (S11), with its ETag",
)
async def get_settings(
    access: Caller, changes: ChangesDep, subscription_id: Id, response: Response
) -> SettingsOut:
    return tagged(response, settings_out(await changes.subscription(access, subscription_id)))


@router.patch(
    "/v1/subscriptions/{subscription_id}/settings",
    summary="Change settings with a JSON merge patch (S11); If-Match is required",
    responses={412: PROBLEM, 428: PROBLEM},
)
async def patch_settings(
    access: Caller,
    changes: ChangesDep,
    subscription_id: Id,
    body: dict[str, Any],
    client: ClientAddress,
    response: Response,
    if_match: IfMatch = None,
) -> SettingsOut:
    subscription = await changes.change_settings(
        access, subscription_id, body, if_match=if_match, client=client
    )
    return tagged(response, settings_out(subscription))
