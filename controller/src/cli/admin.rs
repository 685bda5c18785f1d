//! `edgefleet admin tokens`: make, list and revoke the admin tokens the CLI carries.

use super::client::Client;
use super::output::{ago, print_json, print_table};
use super::target::{ConfigError, Target};
use super::{AdminCommand, TokensCommand};
use edgefleet_controller::trust::credentials::Credentials;

pub(crate) async fn run(target: &Target, command: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::Tokens(command) = command;
    let mut client = Client::connect(target).await?;
    match command {
        TokensCommand::Create {
            name,
            role,
            json,
            out,
            address,
        } => {
            // Checked before the token exists, so that a refusal leaves nothing behind.
            if let Some(out) = &out {
                if out.exists() {
                    return Err(ConfigError(format!(
                        "{} exists; choose another --out (no token was made)",
                        out.display()
                    ))
                    .into());
                }
            }
            let reply = client.create_admin_token(&name, &role).await?;
            if json {
                return print_json(&reply);
            }
            match out {
                Some(out) => {
                    let credentials = Credentials {
                        controller: address.unwrap_or_else(|| target.address.clone()),
                        ca_pem: target.ca_pem.clone().unwrap_or_default(),
                        token: reply.token,
                    };
                    credentials.write_new(&out).map_err(|e| {
                        anyhow::anyhow!("{e} (the token {name} was made: revoke it with `edgefleet admin tokens revoke {name}`)")
                    })?;
                    println!(
                        "wrote {} ({role} token {name} for {}): hand it over privately; its holder runs `edgefleet --credentials FILE …`",
                        out.display(),
                        credentials.controller
                    );
                }
                None => {
                    println!("{}", reply.token);
                    eprintln!("{role} token {name}: shown once, only its hash is kept");
                }
            }
        }
        TokensCommand::Ls { json } => {
            let tokens = client.admin_tokens().await?;
            if json {
                return print_json(&tokens);
            }
            let now = edgefleet_controller::now_ms();
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.role.clone(),
                        ago(t.created_unix_ms, now),
                        match t.revoked_unix_ms {
                            0 => "valid".into(),
                            at => format!("revoked {}", ago(at, now)),
                        },
                    ]
                })
                .collect();
            print_table(&["NAME", "ROLE", "CREATED", "STATE"], &rows);
        }
        TokensCommand::Revoke { name } => {
            client.revoke_admin_token(&name).await?;
            println!("revoked admin token {name}");
        }
    }
    Ok(())
}
