"""The e-invoices of an invoice (S10): UBL 2.1 as OIOUBL 2.1 (to a GLN/EAN location over
NemHandel) and as Peppol BIS Billing 3.0 (to a Peppol endpoint)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from lxml import etree

from services.billing.documents import (
    NOT_XML,
    SELLER,
    DocumentFormat,
    FormatNotAvailable,
    InvoiceDocument,
    grouped,
    line_text,
)
from services.billing.invoicing import VAT_PERCENT, vat_of

INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
NSMAP = {None: INVOICE_NS, "cac": CAC, "cbc": CBC}
PEPPOL_CUSTOMIZATION = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PEPPOL_PROFILE = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
OIOUBL_CUSTOMIZATION = "OIOUBL-2.1"
OIOUBL_PROFILE = "urn:www.nesubl.eu:profiles:profile5:ver2.0"  # Procurement-BilSim: invoice only
# UN/ECE recommendation 20 units of the invoice lines' units.
UNIT_CODES = {"month": "MON", "minutes": "MIN", "messages": "H87", "MB": "4L"}


def _amount(ore: int) -> str:
    return str(Decimal(ore).scaleb(-2).quantize(Decimal("0.01")))


class _Ubl:
    """Appends UBL elements in schema order; `profile` decides the codes each profile wants."""

    def __init__(self, profile: DocumentFormat, currency: str) -> None:
        self.profile = profile
        self.currency = currency
        self.root = etree.Element(f"{{{INVOICE_NS}}}Invoice", nsmap=NSMAP)

    def basic(self, parent: Any, name: str, text: str, **attributes: str) -> Any:
        element = etree.SubElement(parent, f"{{{CBC}}}{name}", {k: v for k, v in attributes.items() if v})
        # Master data stored before it was checked (`unprintable`) may hold characters XML
        # cannot carry; left out, the rest of the e-invoice is still the invoice as issued.
        element.text = NOT_XML.sub("", text)
        return element

    def money(self, parent: Any, name: str, ore: int) -> Any:
        return self.basic(parent, name, _amount(ore), currencyID=self.currency)

    def aggregate(self, parent: Any, name: str) -> Any:
        return etree.SubElement(parent, f"{{{CAC}}}{name}")

    def party(
        self,
        parent: Any,
        *,
        endpoint: tuple[str, str],
        name: str,
        street: str,
        postal_code: str,
        city: str,
        cvr: str,
        contact: str | None = None,
    ) -> None:
        party = self.aggregate(parent, "Party")
        scheme, endpoint_id = endpoint
        self.basic(party, "EndpointID", endpoint_id, schemeID=scheme)
        self.basic(self.aggregate(party, "PartyName"), "Name", name)
        address = self.aggregate(party, "PostalAddress")
        if self.profile == "oioubl":
            self.basic(
                address,
                "AddressFormatCode",
                "StructuredLax",
                listAgencyID="320",
                listID="urn:oioubl:codelist:addressformatcode-1.1",
            )
        self.basic(address, "StreetName", street)
        self.basic(address, "CityName", city)
        self.basic(address, "PostalZone", postal_code)
        self.basic(self.aggregate(address, "Country"), "IdentificationCode", "DK")
        tax_scheme = self.aggregate(party, "PartyTaxScheme")
        if self.profile == "oioubl":
            self.basic(tax_scheme, "CompanyID", f"DK{cvr}", schemeID="DK:SE")
        else:
            self.basic(tax_scheme, "CompanyID", f"DK{cvr}")
        self.tax_scheme(tax_scheme)
        legal = self.aggregate(party, "PartyLegalEntity")
        self.basic(legal, "RegistrationName", name)
        if self.profile == "oioubl":
            self.basic(legal, "CompanyID", f"DK{cvr}", schemeID="DK:CVR")
        else:
            self.basic(legal, "CompanyID", cvr, schemeID="0184")
        if contact is not None and self.profile == "oioubl":
            # OIOUBL's buyer reference (personreference): the account the invoice is for.
            self.basic(self.aggregate(party, "Contact"), "ID", contact)

    def tax_scheme(self, parent: Any) -> None:
        scheme = self.aggregate(parent, "TaxScheme")
        if self.profile == "oioubl":
            self.basic(
                scheme, "ID", "63", schemeAgencyID="320", schemeID="urn:oioubl:id:taxschemeid-1.5"
            )
            self.basic(scheme, "Name", "Moms")
        else:
            self.basic(scheme, "ID", "VAT")

    def tax_category(self, parent: Any, name: str) -> None:
        category = self.aggregate(parent, name)
        if self.profile == "oioubl":
            self.basic(
                category,
                "ID",
                "StandardRated",
                schemeAgencyID="320",
                schemeID="urn:oioubl:id:taxcategoryid-1.3",
            )
        else:
            self.basic(category, "ID", "S")
        self.basic(category, "Percent", str(VAT_PERCENT))
        self.tax_scheme(category)


def buyer_endpoint(document: InvoiceDocument, profile: DocumentFormat) -> tuple[str, str]:
    if profile == "oioubl" and document.delivery_gln:
        return "GLN", document.delivery_gln
    if profile == "peppol" and document.delivery_peppol_scheme and document.delivery_peppol_id:
        return document.delivery_peppol_scheme, document.delivery_peppol_id
    raise FormatNotAvailable(f"Invoice {document.number} has no {profile} endpoint; ask for format=pdf.")


def render_ubl(document: InvoiceDocument, profile: DocumentFormat) -> bytes:
    """The invoice as a UBL 2.1 Invoice: OIOUBL 2.1 (`oioubl`) or Peppol BIS Billing 3.0
    (`peppol`). One VAT category (standard rated, 25 %) covers every line."""
    ubl = _Ubl(profile, document.currency)
    root = ubl.root
    if profile == "oioubl":
        ubl.basic(root, "UBLVersionID", "2.1")
        ubl.basic(root, "CustomizationID", OIOUBL_CUSTOMIZATION)
        ubl.basic(
            root, "ProfileID", OIOUBL_PROFILE, schemeAgencyID="320", schemeID="urn:oioubl:id:profileid-1.6"
        )
    else:
        ubl.basic(root, "CustomizationID", PEPPOL_CUSTOMIZATION)
        ubl.basic(root, "ProfileID", PEPPOL_PROFILE)
    ubl.basic(root, "ID", document.number)
    if profile == "oioubl":
        ubl.basic(root, "UUID", document.id)
    ubl.basic(root, "IssueDate", document.issued_on.isoformat())
    ubl.basic(root, "DueDate", document.due_on.isoformat())
    if profile == "oioubl":
        ubl.basic(
            root,
            "InvoiceTypeCode",
            "380",
            listAgencyID="320",
            listID="urn:oioubl:codelist:invoicetypecode-1.2",
        )
    else:
        ubl.basic(root, "InvoiceTypeCode", "380")
    ubl.basic(root, "DocumentCurrencyCode", document.currency)
    # The buyer's reference is the account: what the customer's system books the invoice by.
    ubl.basic(root, "BuyerReference", document.account_number)
    period = ubl.aggregate(root, "InvoicePeriod")
    ubl.basic(period, "StartDate", document.period_start.isoformat())
    ubl.basic(period, "EndDate", document.period_end.isoformat())

    seller_endpoint = ("DK:CVR", f"DK{SELLER.cvr}") if profile == "oioubl" else ("0184", SELLER.cvr)
    ubl.party(
        ubl.aggregate(root, "AccountingSupplierParty"),
        endpoint=seller_endpoint,
        name=SELLER.name,
        street=SELLER.street,
        postal_code=SELLER.postal_code,
        city=SELLER.city,
        cvr=SELLER.cvr,
    )
    ubl.party(
        ubl.aggregate(root, "AccountingCustomerParty"),
        endpoint=buyer_endpoint(document, profile),
        name=document.buyer_name,
        street=document.buyer_street,
        postal_code=document.buyer_postal_code,
        city=document.buyer_city,
        cvr=document.cvr,
        contact=document.account_number,
    )

    if profile == "oioubl":
        # A Danish bank transfer (reg.nr. and account) with the invoice number as reference.
        means = ubl.aggregate(root, "PaymentMeans")
        ubl.basic(means, "ID", "1")
        ubl.basic(means, "PaymentMeansCode", "42")
        ubl.basic(means, "PaymentDueDate", document.due_on.isoformat())
        ubl.basic(
            means,
            "PaymentChannelCode",
            "DK:BANK",
            listAgencyID="320",
            listID="urn:oioubl:codelist:paymentchannelcode-1.1",
        )
        ubl.basic(means, "InstructionNote", document.number)
        account = ubl.aggregate(means, "PayeeFinancialAccount")
        ubl.basic(account, "ID", SELLER.bank_account)
        ubl.basic(ubl.aggregate(account, "FinancialInstitutionBranch"), "ID", SELLER.bank_registration)
    else:
        # A transfer to the Danish bank account (42: the Danish rules' code with reg.nr. and
        # account), or to the IBAN (58), the invoice number as the payment id (BT-83).
        for code, account_id, branch_id in (
            ("42", SELLER.bank_account, SELLER.bank_registration),
            ("58", SELLER.iban, SELLER.bic),
        ):
            means = ubl.aggregate(root, "PaymentMeans")
            ubl.basic(means, "PaymentMeansCode", code)
            ubl.basic(means, "PaymentID", document.number)
            account = ubl.aggregate(means, "PayeeFinancialAccount")
            ubl.basic(account, "ID", account_id)
            ubl.basic(ubl.aggregate(account, "FinancialInstitutionBranch"), "ID", branch_id)

    line_total = sum(line.amount_ore for line in document.lines)
    tax_total = ubl.aggregate(root, "TaxTotal")
    ubl.money(tax_total, "TaxAmount", document.vat_ore)
    subtotal = ubl.aggregate(tax_total, "TaxSubtotal")
    ubl.money(subtotal, "TaxableAmount", line_total)
    ubl.money(subtotal, "TaxAmount", document.vat_ore)
    ubl.tax_category(subtotal, "TaxCategory")

    totals = ubl.aggregate(root, "LegalMonetaryTotal")
    ubl.money(totals, "LineExtensionAmount", line_total)
    ubl.money(totals, "TaxExclusiveAmount", document.amount_excl_vat_ore)
    ubl.money(totals, "TaxInclusiveAmount", document.amount_incl_vat_ore)
    ubl.money(totals, "PayableAmount", document.amount_incl_vat_ore)

    for number, line in enumerate(
        (line for _, lines in grouped(document.lines) for line in lines), start=1
    ):
        element = ubl.aggregate(root, "InvoiceLine")
        ubl.basic(element, "ID", str(number))
        unit = UNIT_CODES.get(line.unit, "C62")
        ubl.basic(element, "InvoicedQuantity", str(line.quantity), unitCode=unit)
        ubl.money(element, "LineExtensionAmount", line.amount_ore)
        if profile == "oioubl":
            # OIOUBL wants each line's VAT too (Peppol forbids it: its VAT is the document's).
            line_tax = ubl.aggregate(element, "TaxTotal")
            ubl.money(line_tax, "TaxAmount", vat_of(line.amount_ore))
            line_subtotal = ubl.aggregate(line_tax, "TaxSubtotal")
            ubl.money(line_subtotal, "TaxableAmount", line.amount_ore)
            ubl.money(line_subtotal, "TaxAmount", vat_of(line.amount_ore))
            ubl.tax_category(line_subtotal, "TaxCategory")
        item = ubl.aggregate(element, "Item")
        if line.identifier:
            ubl.basic(item, "Description", line.identifier)
        ubl.basic(item, "Name", line_text(line, document.language))
        ubl.tax_category(item, "ClassifiedTaxCategory")
        # The price is the line's amount for all of its quantity (BaseQuantity), so that
        # quantity × price ÷ base quantity is the line amount exactly, without rounding.
        price = ubl.aggregate(element, "Price")
        ubl.money(price, "PriceAmount", line.amount_ore)
        ubl.basic(price, "BaseQuantity", str(max(line.quantity, 1)), unitCode=unit)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
