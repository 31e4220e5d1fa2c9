"""Deterministic demo customers: one group of four companies and one standalone company.

Every CVR here passes the modulus-11 check. `NOT_A_CUSTOMER_CVR` is valid too but is not a
customer, so a newcomer can see the 403 of S1's application form.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoCompany:
    cvr: str
    name: str
    parent_cvr: str | None
    address: str
    accounts: tuple[tuple[str, str], ...]


DEMO_COMPANIES: tuple[DemoCompany, ...] = (
    DemoCompany(
        "35657193",
        "Nordlys Holding A/S",
        None,
        "Havnegade 12, 1058 København K",
        (("10000011", "Hovedkonto"), ("10000012", "Direktion")),
    ),
    DemoCompany(
        "37826111",
        "Nordlys Energi A/S",
        "35657193",
        "Vestergade 4, 8000 Aarhus C",
        (("10000021", "Mobil"), ("10000022", "Bredbånd"), ("10000023", "Fastnet")),
    ),
    DemoCompany(
        "41204559",
        "Nordlys Service ApS",
        "35657193",
        "Kongensgade 88, 5000 Odense C",
        (("10000031", "Mobil"), ("10000032", "Servicevogne")),
    ),
    DemoCompany(
        "33112874",
        "Nordlys Vind ApS",
        "37826111",
        "Strandvejen 2, 6700 Esbjerg",
        (("10000041", "Mobil"), ("10000042", "M2M-målere")),
    ),
    DemoCompany(
        "22109340",
        "Bageriet Solsikke ApS",
        None,
        "Nørregade 7, 4000 Roskilde",
        (("10000051", "Butik"), ("10000052", "Mobil")),
    ),
)

GROUP_PARENT_CVR = "35657193"
STANDALONE_CVR = "22109340"
NOT_A_CUSTOMER_CVR = "44551209"


def generated_companies(count: int) -> list[DemoCompany]:
    """`count` more standalone customers with valid CVRs, the same every time (benchmarks, load tests)."""
    from stdnum.dk import cvr as stdnum_cvr

    companies: list[DemoCompany] = []
    base = 50_000_000
    while len(companies) < count:
        base += 1
        candidate = str(base)
        if stdnum_cvr.is_valid(candidate):
            n = len(companies) + 1
            companies.append(
                DemoCompany(
                    candidate,
                    f"Demo Virksomhed {n} ApS",
                    None,
                    f"Testvej {n}, 2000 Frederiksberg",
                    ((f"2{n:07d}", "Mobil"),),
                )
            )
    return companies
