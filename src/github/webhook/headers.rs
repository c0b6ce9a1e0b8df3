//! What a delivery's headers can settle before its body is read: the signature's form, the
//! delivery id's shape, and which event names are GitHub's own.

use super::SignatureError;

/// The event names GitHub documents ("Webhook events and payloads"). Any other name is
/// counted as `other`, so a stranger cannot mint metrics series by making names up.
pub const EVENTS: &[&str] = &[
    "branch_protection_configuration",
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "code_scanning_alert",
    "commit_comment",
    "create",
    "custom_property",
    "custom_property_values",
    "delete",
    "dependabot_alert",
    "deploy_key",
    "deployment",
    "deployment_protection_rule",
    "deployment_review",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "github_app_authorization",
    "gollum",
    "installation",
    "installation_repositories",
    "installation_target",
    "issue_comment",
    "issue_dependencies",
    "issues",
    "label",
    "marketplace_purchase",
    "member",
    "membership",
    "merge_group",
    "meta",
    "milestone",
    "org_block",
    "organization",
    "package",
    "page_build",
    "personal_access_token_request",
    "ping",
    "project",
    "project_card",
    "project_column",
    "projects_v2",
    "projects_v2_item",
    "projects_v2_status_update",
    "public",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "push",
    "registry_package",
    "release",
    "repository",
    "repository_advisory",
    "repository_dispatch",
    "repository_import",
    "repository_ruleset",
    "repository_vulnerability_alert",
    "secret_scanning_alert",
    "secret_scanning_alert_location",
    "secret_scanning_scan",
    "security_advisory",
    "security_and_analysis",
    "sponsorship",
    "star",
    "status",
    "sub_issues",
    "team",
    "team_add",
    "watch",
    "workflow_dispatch",
    "workflow_job",
    "workflow_run",
];

/// `event` if GitHub documents it, else `"other"`: the name to count and log a delivery
/// under.
pub fn event_label(event: &str) -> &'static str {
    EVENTS
        .iter()
        .find(|known| **known == event)
        .copied()
        .unwrap_or("other")
}

/// The longest delivery id hoist accepts; a GUID is 36 bytes.
pub const MAX_DELIVERY_ID: usize = 64;

/// Whether `id` has the shape of GitHub's `X-GitHub-Delivery`: a GUID, 8-4-4-4-12 hex
/// digits (either case). Anything else is not from GitHub and is refused before it can
/// reach the database, the journal, `/status` or the log.
pub fn is_delivery_id(id: &str) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    if id.len() > MAX_DELIVERY_ID {
        return false;
    }
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == GROUPS.len()
        && groups
            .iter()
            .zip(GROUPS)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The HMAC an `X-Hub-Signature-256: sha256=<64 hex>` header claims, checked for form only.
/// `sha1_header` is the legacy `X-Hub-Signature`, only used to explain a refusal.
pub fn claimed_signature(
    sha256_header: Option<&str>,
    sha1_header: Option<&str>,
) -> Result<[u8; 32], SignatureError> {
    let Some(header) = sha256_header else {
        return Err(if sha1_header.is_some() {
            SignatureError::Sha1Only
        } else {
            SignatureError::Missing
        });
    };
    let hex_part = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let mut claimed = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut claimed).map_err(|_| SignatureError::Malformed)?;
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_githubs_guids() {
        for good in [
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "72D3162E-CC78-11E3-81AB-4C9367DC0958",
            "00000000-0000-0000-0000-000000000000",
        ] {
            assert!(is_delivery_id(good), "{good}");
        }
        for bad in [
            "",
            "delivery-1",
            "72d3162e-cc78-11e3-81ab-4c9367dc095",
            "72d3162e-cc78-11e3-81ab-4c9367dc09588",
            "72d3162ecc7811e381ab4c9367dc0958",
            "72d3162e-cc78-11e3-81ab-4c9367dc095g",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958-",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958\n",
            "{72d3162e-cc78-11e3-81ab-4c9367dc0958}",
            "72d3162e_cc78_11e3_81ab_4c9367dc0958",
        ] {
            assert!(!is_delivery_id(bad), "{bad:?}");
        }
        assert!(!is_delivery_id(&"a".repeat(300 * 1024)));
    }

    #[test]
    fn unknown_event_names_are_other() {
        for name in [
            "ping",
            "push",
            "package",
            "registry_package",
            "workflow_run",
            "release",
            "issues",
        ] {
            assert_eq!(event_label(name), name);
        }
        for name in ["", "Push", "push ", "x-42", "ping\n", &"a".repeat(10_000)] {
            assert_eq!(event_label(name), "other", "{name:?}");
        }
        let mut sorted = EVENTS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, EVENTS, "sorted and without duplicates");
    }
}
