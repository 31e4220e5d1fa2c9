"""Identity's API as the pages call it: login, activation, users, the support console, the
audit trail, forgotten passwords, the own profile and takeovers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from services.portal.clients.http import Caller, ServiceApi


class Identity(ServiceApi):
    """Identity's API: login, activation, users, the support console, audit, own profile."""

    # --- login (S7) ---------------------------------------------------------------------

    async def login(
        self, caller: Caller, username: str, password: str, device_token: str | None
    ) -> dict[str, Any]:
        body = {"username": username, "password": password}
        if device_token:
            body["device_token"] = device_token
        return await self.client.json_object("POST", "/v1/login", caller, json=body)

    async def send_code(self, caller: Caller, challenge_id: str, method: str) -> dict[str, Any]:
        return await self.client.json_object(
            "POST", f"/v1/login/{challenge_id}/send", caller, json={"method": method}
        )

    async def verify(self, caller: Caller, challenge_id: str, code: str) -> dict[str, Any]:
        return await self.client.json_object(
            "POST", f"/v1/login/{challenge_id}/verify", caller, json={"code": code}
        )

    async def unlock(self, caller: Caller, username: str) -> None:
        await self.client.call("POST", "/v1/login/unlock", caller, json={"username": username})

    async def refresh(self, caller: Caller, refresh_token: str) -> dict[str, Any]:
        return await self.client.json_object(
            "POST", "/v1/token/refresh", caller, json={"refresh_token": refresh_token}
        )

    async def logout(self, caller: Caller) -> None:
        await self.client.call("POST", "/v1/logout", caller)

    async def me(self, caller: Caller) -> dict[str, Any]:
        return await self.client.json_object("GET", "/v1/me", caller)

    # --- Min profil: the authenticator app (S7) -------------------------------------------

    async def start_totp(self, caller: Caller, current_code: str | None = None) -> dict[str, Any]:
        """`{secret, otpauth_uri}`; 403 `reauthentication-required` when the login is older than
        15 minutes and no (right) `current_code` came — a wrong one also ends the session."""
        body = {"current_code": current_code} if current_code else {}
        return await self.client.json_object("POST", "/v1/me/totp", caller, json=body)

    async def confirm_totp(self, caller: Caller, code: str) -> list[str]:
        """The ten recovery codes, given once."""
        result = await self.client.json_object("POST", "/v1/me/totp/confirm", caller, json={"code": code})
        return list(result["recovery_codes"])

    # --- activation (S2) ----------------------------------------------------------------

    async def activate(self, caller: Caller, activation: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/activation`: the active login `{user_id, username, status}` (200) for a
        colleague's or support login; for the letter's, `{activation_id, sms_sent_to,
        email_sent_to, expires_at}` (202): codes went to the mobile number and the email."""
        return await self.client.json_object("POST", "/v1/activation", caller, json=activation)

    async def confirm_activation(
        self, caller: Caller, activation_id: str, sms_code: str, email_code: str
    ) -> dict[str, Any]:
        return await self.client.json_object(
            "POST",
            f"/v1/activation/{activation_id}/confirm",
            caller,
            json={"sms_code": sms_code, "email_code": email_code},
        )

    # --- self-service users (S4, S5, S12, S14) ------------------------------------------

    async def companies(self, caller: Caller) -> list[dict[str, Any]]:
        """The companies and accounts the caller may grant (the wizard's steps 4 and 5)."""
        return await self.client.json_list("GET", "/v1/companies", caller)

    async def users(self, caller: Caller) -> list[dict[str, Any]]:
        return await self.client.json_list("GET", "/v1/users", caller)

    async def user(self, caller: Caller, user_id: str) -> dict[str, Any]:
        return await self.client.json_object("GET", f"/v1/users/{user_id}", caller)

    async def create_user(self, caller: Caller, user: dict[str, Any]) -> dict[str, Any]:
        """S5: `{name, email, mobile, grants, functions}`; identity emails the user (S6)."""
        return await self.client.json_object("POST", "/v1/users", caller, json=user)

    async def change_user(self, caller: Caller, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return await self.client.json_object("PATCH", f"/v1/users/{user_id}", caller, json=changes)

    async def act_on_user(self, caller: Caller, user_id: str, action: str) -> dict[str, Any]:
        """`disable`, `enable`, `reset-2fa`, `resend-activation` or `unlock`."""
        return await self.client.json_object("POST", f"/v1/users/{user_id}/{action}", caller)

    async def delete_user(self, caller: Caller, user_id: str) -> None:
        await self.client.call("DELETE", f"/v1/users/{user_id}", caller)

    # --- support console (S3, S13) -------------------------------------------------------

    async def company_users(self, caller: Caller, cvr: str) -> list[dict[str, Any]]:
        """A company's logins, for support staff (audited by identity as `support.list-users`)."""
        return await self.client.json_list("GET", f"/v1/support/companies/{cvr}/users", caller)

    async def support_delete_user(self, caller: Caller, user_id: str) -> None:
        await self.client.call("DELETE", f"/v1/support/users/{quote(user_id, safe='')}", caller)

    async def unlock_user(self, caller: Caller, user_id: str) -> None:
        await self.client.call("POST", f"/v1/support/users/{quote(user_id, safe='')}/unlock", caller)

    async def resend_letter(self, caller: Caller, user_id: str) -> dict[str, Any]:
        """`{user_id, username, recipient_cvr, expires_at, deliver_by}` of the new letter."""
        return await self.client.json_object(
            "POST", f"/v1/support/users/{quote(user_id, safe='')}/resend-letter", caller
        )

    # Audit

    async def company_audit(self, caller: Caller, filters: dict[str, str]) -> list[dict[str, Any]]:
        """The caller's company's audit trail within their grants, newest first; `filters` are
        `GET /v1/audit`'s (`from`, `to`, `action`, `user_id`, `before`, `limit`)."""
        return await self.client.json_list("GET", "/v1/audit", caller, params=filters)

    async def support_audit(self, caller: Caller, cvr: str, filters: dict[str, str]) -> list[dict[str, Any]]:
        """One company's audit trail for support staff, with the same filters."""
        return await self.client.json_list("GET", "/v1/support/audit", caller, params={**filters, "cvr": cvr})

    # Forgotten password (docs/identity.md, "Forgotten password")

    async def request_password_reset(self, caller: Caller, username_or_email: str) -> dict[str, Any]:
        return await self.client.json_object(
            "POST", "/v1/password-reset", caller, json={"username_or_email": username_or_email}
        )

    async def confirm_password_reset_email(self, caller: Caller, reset_id: str, code: str) -> dict[str, Any]:
        return await self.client.json_object(
            "POST", f"/v1/password-reset/{quote(reset_id, safe='')}/email-code", caller, json={"code": code}
        )

    async def send_password_reset_sms(self, caller: Caller, reset_id: str) -> dict[str, Any]:
        return await self.client.json_object(
            "POST", f"/v1/password-reset/{quote(reset_id, safe='')}/send", caller
        )

    async def complete_password_reset(
        self, caller: Caller, reset_id: str, code: str, password: str
    ) -> dict[str, Any]:
        return await self.client.json_object(
            "POST",
            f"/v1/password-reset/{quote(reset_id, safe='')}/complete",
            caller,
            json={"code": code, "password": password},
        )

    # Own profile
    async def set_language(self, caller: Caller, language: str) -> dict[str, Any]:
        """The user's own language, for every message to them; answers the new `me`."""
        return await self.client.json_object("PATCH", "/v1/me", caller, json={"language": language})

    async def change_password(
        self, caller: Caller, current_password: str, new_password: str
    ) -> dict[str, Any]:
        """`{sessions_ended}`: the user's other sessions end, this one goes on."""
        return await self.client.json_object(
            "POST",
            "/v1/me/password",
            caller,
            json={"current_password": current_password, "new_password": new_password},
        )

    async def start_contact_change(self, caller: Caller, field: str, value: str) -> dict[str, Any]:
        """`field` is `email` or `mobile`: `{change_id, field, sent_to, expires_at}`; a code went to `value`."""
        return await self.client.json_object("POST", f"/v1/me/{field}", caller, json={field: value})

    async def confirm_contact_change(self, caller: Caller, change_id: str, code: str) -> dict[str, Any]:
        """The new `me`, once the code sent to the new address came back."""
        return await self.client.json_object(
            "POST", f"/v1/me/contact-changes/{quote(change_id, safe='')}/confirm", caller, json={"code": code}
        )

    async def own_sessions(self, caller: Caller) -> list[dict[str, Any]]:
        """`{id, device, user_agent, client_address, started_at, last_used_at, current}`, latest use first."""
        return await self.client.json_list("GET", "/v1/me/sessions", caller)

    async def end_own_session(self, caller: Caller, session_id: str) -> None:
        await self.client.call("DELETE", f"/v1/me/sessions/{quote(session_id, safe='')}", caller)

    async def end_other_sessions(self, caller: Caller) -> int:
        result = await self.client.json_object("POST", "/v1/me/sessions/end-others", caller)
        return int(result["sessions_ended"])

    # Takeover

    async def takeover_by_link(self, caller: Caller, cancel_token: str) -> dict[str, Any]:
        """What a takeover notice's cancel link would cancel; nothing changes."""
        return await self.client.json_object(
            "POST", "/v1/takeovers/lookup", caller, json={"cancel_token": cancel_token}
        )

    async def cancel_takeover_by_link(self, caller: Caller, cancel_token: str) -> dict[str, Any]:
        return await self.client.json_object(
            "POST", "/v1/takeovers/cancel", caller, json={"cancel_token": cancel_token}
        )

    async def open_takeovers(self, caller: Caller) -> list[dict[str, Any]]:
        return await self.client.json_list("GET", "/v1/takeovers", caller)

    async def cancel_takeover(self, caller: Caller, takeover_id: str) -> dict[str, Any]:
        return await self.client.json_object(
            "POST", f"/v1/takeovers/{quote(takeover_id, safe='')}/cancel", caller
        )
