//! `edgefleet agents`: every agent that ever connected, online or not.

use super::client::Client;
use super::output::{ago, print_json, print_table};

/// `agents [--json]`.
pub(super) async fn list(address: &str, json: bool) -> anyhow::Result<()> {
    let agents = Client::connect(address).await?.agents().await?;
    if json {
        return print_json(&agents);
    }
    let now = edgefleet_controller::now_ms();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let mut labels: Vec<String> =
                a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            vec![
                a.name.clone(),
                if a.online {
                    "online".into()
                } else {
                    "offline".into()
                },
                ago(a.last_seen_unix_ms, now),
                a.target.clone(),
                labels.join(","),
                a.agent_id.chars().take(8).collect(),
            ]
        })
        .collect();
    print_table(
        &["NAME", "STATUS", "LAST SEEN", "TARGET", "LABELS", "ID"],
        &rows,
    );
    Ok(())
}
