"""Output field specs, live checks against a CRM's field descriptions, and the shipped Salesforce metadata."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conftest import REPO

from connector import outputs
from connector.config.mappings import load_mappings

MAPPINGS = load_mappings(REPO / "mappings")
NS = {"m": "http://soap.sforce.com/2006/04/metadata"}


def sf_field(name: str, type_: str, length: int = 0, precision: int = 0, scale: int = 0,
             values: tuple[str, ...] = (), updateable: bool = True, **extra: object) -> dict:
    """One Account field as GET /sobjects/Account/describe lists it (the keys a check reads, and a few more)."""
    return {"name": name, "label": name.removesuffix("__c").replace("_", " "), "type": type_, "length": length,
            "precision": precision, "scale": scale, "updateable": updateable, "createable": updateable,
            "nillable": name != "Id", "custom": name.endswith("__c"),
            "picklistValues": [{"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                               for v in values], **extra}


# Account as an org holds it once deploy/salesforce is deployed: written out by hand, never derived
# from connector.outputs, so a wrong type mapping there cannot agree with itself.
SF_DESCRIBE = [
    sf_field("Id", "id", 18, updateable=False),
    sf_field("Name", "string", 255),
    sf_field("Website", "url", 255),
    sf_field("Customer_Segment__c", "picklist", 255, values=("SMB", "Mid-Market", "Enterprise")),
    sf_field("Lifecycle_Stage__c", "picklist", 255, values=("Onboarding", "Adoption", "Maturity", "Renewal")),
    sf_field("CSM_Rating__c", "double", precision=2, scale=0),
    sf_field("Seats_Purchased__c", "double", precision=8, scale=0),
    sf_field("Active_Users_30d__c", "double", precision=8, scale=0),
    sf_field("NPS__c", "double", precision=3, scale=0),
    sf_field("Renewal_Date__c", "date"),
    sf_field("Stripe_Customer_Id__c", "string", 255),
    sf_field("Health_Score__c", "double", precision=5, scale=2),
    sf_field("Health_Grade__c", "string", 10),
    sf_field("Health_Status__c", "picklist", 255, values=("Red", "Yellow", "Green"), restrictedPicklist=True),
    sf_field("Health_Trend__c", "string", 40),
    sf_field("Health_Usage__c", "double", precision=5, scale=2),
    sf_field("Health_Support__c", "double", precision=5, scale=2),
    sf_field("Health_Billing__c", "double", precision=5, scale=2),
    sf_field("Health_Relationship__c", "double", precision=5, scale=2),
    sf_field("Health_Scored_At__c", "datetime"),
    sf_field("Health_Drivers__c", "textarea", 1000, extraTypeInfo="plaintextarea"),
    sf_field("Health_Coverage__c", "percent", precision=5, scale=1),
    sf_field("Churn_Risk_Score__c", "double", precision=5, scale=2),
    sf_field("Churn_Risk_Status__c", "picklist", 255, values=("Low", "Medium", "High"), restrictedPicklist=True),
    sf_field("Churn_Risk_Triggers__c", "textarea", 1000, extraTypeInfo="plaintextarea"),
]


def sf_describe() -> dict[str, dict]:
    """A fresh copy of SF_DESCRIBE by field name, as SalesforceSource.describe returns it."""
    return {f["name"]: {**f, "picklistValues": [dict(v) for v in f["picklistValues"]]} for f in SF_DESCRIBE}


def hs_property(name: str, type_: str, field_type: str, options: tuple[str, ...] = (), read_only: bool = False,
                group: str = "healthsync") -> dict:
    """One company property as GET /crm/v3/properties/companies lists it."""
    return {"name": name, "label": name.replace("_", " ").capitalize(), "type": type_, "fieldType": field_type,
            "groupName": group, "hidden": False, "formField": False, "calculated": False,
            "hasUniqueValue": False, "displayOrder": -1,
            "options": [{"label": o, "value": o, "displayOrder": i, "hidden": False} for i, o in enumerate(options)],
            "modificationMetadata": {"archivable": True, "readOnlyDefinition": read_only, "readOnlyValue": read_only}}


# The company properties `healthsync setup` must leave behind, by hand (HubSpot's own type names).
HS_PROPERTIES = [
    hs_property("name", "string", "text", group="companyinformation"),
    hs_property("domain", "string", "text", group="companyinformation"),
    hs_property("customer_segment", "enumeration", "select", ("SMB", "Mid-Market", "Enterprise"),
                group="companyinformation"),
    hs_property("csm_rating", "number", "number", group="companyinformation"),
    hs_property("hs_object_id", "number", "number", read_only=True, group="companyinformation"),
    hs_property("health_score", "number", "number"),
    hs_property("health_grade", "string", "text"),
    hs_property("health_status", "enumeration", "select", ("Red", "Yellow", "Green")),
    hs_property("health_trend", "string", "text"),
    hs_property("health_coverage", "number", "number"),
    hs_property("health_drivers", "string", "textarea"),
    hs_property("health_usage", "number", "number"),
    hs_property("health_support", "number", "number"),
    hs_property("health_billing", "number", "number"),
    hs_property("health_relationship", "number", "number"),
    hs_property("churn_risk_score", "number", "number"),
    hs_property("churn_risk_status", "enumeration", "select", ("Low", "Medium", "High")),
    hs_property("churn_risk_triggers", "string", "textarea"),
]


def hs_properties() -> dict[str, dict]:
    return {p["name"]: {**p, "options": [dict(o) for o in p["options"]],
                        "modificationMetadata": dict(p["modificationMetadata"])} for p in HS_PROPERTIES}


class Described:
    """A CRM source that answers only the describe calls, with literal data."""

    def __init__(self, system: str, fields: dict[str, dict]):
        self.system, self.fields = system, fields

    def describe(self, _object: str) -> dict[str, dict]:
        return self.fields

    def describe_properties(self) -> dict[str, dict]:
        return self.fields


def test_the_live_check_passes_inputs_and_outputs_described_as_the_apis_describe_them():
    reports = outputs.live_check(MAPPINGS, [Described("salesforce", sf_describe()), Described("hubspot", hs_properties())])
    assert [(r.system, r.good, r.missing, r.problems) for r in reports] == [
        ("salesforce", True, [], []), ("hubspot", True, [], [])]
    without = {n: f for n, f in sf_describe().items() if n != "NPS__c"}
    [report] = outputs.live_check(MAPPINGS, [Described("salesforce", without)])
    assert ["input field NPS__c does not exist in salesforce" in p.message for p in report.problems] == [True]


def test_the_shipped_salesforce_metadata_is_what_the_shipped_mappings_generate():
    generated = outputs.salesforce_metadata(MAPPINGS)
    root = REPO / "deploy" / "salesforce"
    shipped = {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in root.rglob("*") if p.is_file()}
    assert shipped == generated  # regenerate with: healthsync setup --salesforce-metadata deploy/salesforce
    status = ET.fromstring(generated["force-app/main/default/objects/Account/fields/Health_Status__c.field-meta.xml"])
    assert status.find("m:type", NS).text == "Picklist"
    assert [v.text for v in status.findall(".//m:value/m:fullName", NS)] == ["Red", "Yellow", "Green"]
    score = ET.fromstring(generated["force-app/main/default/objects/Account/fields/Health_Score__c.field-meta.xml"])
    assert (score.find("m:type", NS).text, score.find("m:scale", NS).text) == ("Number", "2")
    perms = ET.fromstring(generated["force-app/main/default/permissionsets/Healthsync_Integration.permissionset-meta.xml"])
    granted = {p.find("m:field", NS).text for p in perms.findall("m:fieldPermissions", NS)
               if p.find("m:editable", NS).text == "true"}
    assert granted == {f"Account.{s.name}" for s in outputs.specs(MAPPINGS, "salesforce")}


def test_salesforce_outputs_are_checked_for_presence_access_type_and_picklist_values():
    described = sf_describe()
    report = outputs.check_salesforce(MAPPINGS, described)
    assert report.good and len(report.ok) == 14
    del described["Health_Trend__c"]
    described["Health_Score__c"]["updateable"] = False
    described["Health_Scored_At__c"]["type"] = "date"
    described["Health_Status__c"]["picklistValues"] = [{"value": "Red"}, {"value": "Green"}]
    report = outputs.check_salesforce(MAPPINGS, described)
    assert [s.name for s in report.missing] == ["Health_Trend__c"]
    text = "\n".join(p.render() for p in report.problems)
    assert "Account.Health_Score__c (health score) is not editable by this user" in text
    assert "Account.Health_Scored_At__c (health scored_at) is a date field" in text
    assert "picklist lacks the value(s) Yellow" in text
    assert "mappings/scores/health.yaml:" in text  # each problem names the mapping line
    assert len(report.ok) == 10


def test_hubspot_outputs_are_checked_and_missing_ones_become_create_requests():
    described = hs_properties()
    report = outputs.check_hubspot(MAPPINGS, described)
    assert report.good and len(report.ok) == 13
    # what setup creates is what HubSpot is expected to hold, property by property
    created = {s.name: outputs.hubspot_property(s) for s in outputs.specs(MAPPINGS, "hubspot")}
    assert {n: (b["type"], b["fieldType"], [o["value"] for o in b.get("options", [])]) for n, b in created.items()} == {
        n: (p["type"], p["fieldType"], [o["value"] for o in p["options"]]) for n, p in described.items()
        if p["groupName"] == "healthsync"}
    described["health_score"] = {**described["health_score"], "type": "string", "fieldType": "text"}
    described["health_grade"]["modificationMetadata"]["readOnlyValue"] = True
    del described["health_status"]
    report = outputs.check_hubspot(MAPPINGS, described)
    assert [s.name for s in report.missing] == ["health_status"]
    assert len(report.problems) == 2
    body = outputs.hubspot_property(report.missing[0])
    assert body["type"] == "enumeration" and body["fieldType"] == "select"
    assert [o["value"] for o in body["options"]] == ["Red", "Yellow", "Green"]
    assert body["groupName"] == "healthsync"


def test_deploy_hint_names_exactly_the_missing_fields():
    missing = [s for s in outputs.specs(MAPPINGS, "salesforce") if s.name in ("Health_Trend__c", "Health_Grade__c")]
    hint = outputs.deploy_hint(missing, "deploy/salesforce")
    assert "--metadata CustomField:Account.Health_Grade__c --metadata CustomField:Account.Health_Trend__c" in hint
    assert hint.count("CustomField:") == 2 and "PermissionSet:Healthsync_Integration" in hint
