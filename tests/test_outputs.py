"""Output field specs, live checks against a CRM's field descriptions, and the shipped Salesforce metadata."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conftest import REPO

from connector import outputs
from connector.config.mappings import load_mappings

MAPPINGS = load_mappings(REPO / "mappings")
NS = {"m": "http://soap.sforce.com/2006/04/metadata"}


def sf_describe() -> dict[str, dict]:
    """A describe in which every output field exists with the type the shipped metadata gives it."""
    kinds = {"number": "double", "percent": "percent", "text": "string", "textarea": "textarea",
             "picklist": "picklist", "datetime": "datetime"}
    out = {}
    for spec in outputs.specs(MAPPINGS, "salesforce"):
        out[spec.name] = {"name": spec.name, "type": kinds[spec.kind], "updateable": True,
                          "picklistValues": [{"value": o, "active": True} for o in spec.options]}
    for name in ("Name", "Website", "Customer_Segment__c", "Lifecycle_Stage__c", "CSM_Rating__c", "Seats_Purchased__c",
                 "Active_Users_30d__c", "NPS__c", "Renewal_Date__c", "Stripe_Customer_Id__c"):
        out[name] = {"name": name, "type": "string", "updateable": True}
    return out


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
    specs = outputs.specs(MAPPINGS, "hubspot")
    described = {s.name: {"name": s.name, "type": outputs.HUBSPOT_NEW[s.kind][0],
                          "options": [{"value": o} for o in s.options]} for s in specs}
    assert outputs.check_hubspot(MAPPINGS, described).good
    described["health_score"] = {"name": "health_score", "type": "string"}
    described["health_grade"]["modificationMetadata"] = {"readOnlyValue": True}
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
