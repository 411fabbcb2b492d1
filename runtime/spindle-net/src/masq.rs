//! Removal of the bridge plugin's ipMasq rules when its own DEL cannot.
//!
//! The bridge plugin (through at least 1.5; containernetworking/plugins#810,
//! fix #1078 unmerged) learns which masquerade rules to delete from the
//! addresses on the pod's `eth0`. When the netns is gone (`ip netns del`,
//! lost mount) or `eth0` is, DEL releases the IP but leaves a
//! `POSTROUTING -s <ip> -j CNI-<hash>` rule and its chain behind. Besides the
//! leak, that breaks the next sandbox of the same pod uid: the chain name
//! depends only on network name and container ID, so the new sandbox shares
//! the chain and its DEL then fails with "CHAIN_DEL failed (Device or
//! resource busy)", forever.
//!
//! So after DEL we delete whatever is left of that chain the way the plugin's
//! `ip.TeardownIPMasq` would, using the same iptables binary and naming
//! (`utils.FormatChainName`/`FormatComment`). When the plugin did clean up,
//! this finds nothing and costs one `iptables -S`.

use std::time::Duration;

use sha2::{Digest, Sha512};
use tokio::process::Command;

use crate::NetError;

const TIMEOUT: Duration = Duration::from_secs(60);

/// `utils.FormatChainName`: "CNI-" and the first 24 hex digits of
/// sha512(network name + container ID), 28 characters in all (iptables'
/// chain name limit).
pub(crate) fn chain_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("CNI-{hex}")
}

/// `utils.FormatComment`.
fn comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}

/// Deletes the pod's masquerade jump rules and chain if they still exist.
pub(crate) async fn remove_leftovers(
    path_env: &str,
    network: &str,
    uid: &str,
) -> Result<(), NetError> {
    let chain = chain_name(network, uid);
    let rules = match iptables(path_env, &["-t", "nat", "-S", "POSTROUTING"]).await? {
        Ok(out) => out,
        Err(stderr) => return Err(failed("listing nat POSTROUTING", &stderr)),
    };
    let sources = jump_sources(&rules, &chain);
    // `iptables -S <chain>` fails when the chain does not exist: the normal
    // case, the plugin cleaned up.
    let chain_exists = iptables(path_env, &["-t", "nat", "-S", &chain])
        .await?
        .is_ok();
    if sources.is_empty() && !chain_exists {
        return Ok(());
    }
    tracing::info!(%uid, %chain, ?sources, "removing masquerade rules the bridge plugin left behind");
    let comment = comment(network, uid);
    for src in &sources {
        // The exact spec the plugin added (and deletes) the rule with.
        let args = [
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            src,
            "-j",
            &chain,
            "-m",
            "comment",
            "--comment",
            &comment,
        ];
        if let Err(stderr) = iptables(path_env, &args).await? {
            return Err(failed(
                &format!("deleting the POSTROUTING rule for {src}"),
                &stderr,
            ));
        }
    }
    if chain_exists {
        for (op, what) in [("-F", "flushing"), ("-X", "deleting")] {
            if let Err(stderr) = iptables(path_env, &["-t", "nat", op, &chain]).await? {
                return Err(failed(&format!("{what} chain {chain}"), &stderr));
            }
        }
    }
    Ok(())
}

/// The `-s` addresses of `iptables -S` rules that jump to `chain`.
fn jump_sources(rules: &str, chain: &str) -> Vec<String> {
    rules
        .lines()
        .filter(|l| l.split_whitespace().last() == Some(chain) && l.contains(" -j "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "-s")?;
            words.next().map(String::from)
        })
        .collect()
}

/// Runs iptables (with `-w`, to wait for the xtables lock like the plugins
/// do). `Ok(Ok(stdout))` on success, `Ok(Err(stderr))` when iptables
/// reported failure, `Err` when it could not be run.
async fn iptables(path_env: &str, args: &[&str]) -> Result<Result<String, String>, NetError> {
    let mut cmd = Command::new("iptables");
    cmd.arg("-w")
        .args(args)
        .env("PATH", path_env)
        .kill_on_drop(true);
    let output = match tokio::time::timeout(TIMEOUT, cmd.output()).await {
        Ok(r) => r.map_err(|e| NetError::io("running iptables", e))?,
        Err(_) => {
            return Err(NetError::io(
                "running iptables",
                std::io::ErrorKind::TimedOut.into(),
            ))
        }
    };
    if output.status.success() {
        Ok(Ok(String::from_utf8_lossy(&output.stdout).into_owned()))
    } else {
        Ok(Err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .to_string()))
    }
}

fn failed(what: &str, stderr: &str) -> NetError {
    NetError::io(
        format!("iptables: {what}"),
        std::io::Error::other(stderr.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_match_the_plugins() {
        // Observed from bridge 1.1.1 with network "spt08774185" and
        // container IDs "b" and "c".
        assert_eq!(
            chain_name("spt08774185", "b"),
            "CNI-16436439fb5ef32252fd2b96"
        );
        assert_eq!(
            chain_name("spt08774185", "c"),
            "CNI-565c0cd83d6373d64efc36af"
        );
    }

    #[test]
    fn jump_sources_finds_only_rules_to_the_chain() {
        let rules = r#"-P POSTROUTING ACCEPT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.0.0.3/32 -m comment --comment "name: \"n\" id: \"b\"" -j CNI-aaa
-A POSTROUTING -s 10.0.0.4/32 -m comment --comment "name: \"n\" id: \"c\"" -j CNI-bbb
-A POSTROUTING -s 10.0.0.9/32 -m comment --comment "name: \"n\" id: \"b\"" -j CNI-aaa"#;
        assert_eq!(
            jump_sources(rules, "CNI-aaa"),
            vec!["10.0.0.3/32", "10.0.0.9/32"]
        );
        assert!(jump_sources(rules, "CNI-ccc").is_empty());
    }
}
