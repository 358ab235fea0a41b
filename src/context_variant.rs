//! A shorter context window for a converted model folder.
//!
//! The engine sizes its rotary-embedding tables from `max_position_embeddings` in
//! `config.json` and builds them once per layer at load (for Gemma 3 270M at 32,768 positions
//! that is about 1.5 s of sines and cosines on two cores). A load with `max_context` below the
//! model's window gets a sibling folder whose `config.json` says so and whose other files are
//! hard links (symbolic links where hard links fail) to the converted ones: no copy of weights.

use std::path::{Path, PathBuf};

use crate::gguf_convert::move_into_place;

/// The folder to load for `max_context` positions: `dir` itself when the model's own window is
/// not larger, else `dir/ctx-{max_context}` (created once, atomically).
pub fn folder_for_context(dir: &Path, max_context: usize) -> Result<PathBuf, String> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
    let mut config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let window = config["max_position_embeddings"].as_u64().unwrap_or(0) as usize;
    if window <= max_context {
        return Ok(dir.to_path_buf());
    }
    let target = dir.join(format!("ctx-{max_context}"));
    if target.join("config.json").is_file() {
        return Ok(target);
    }
    let tmp = dir.join(format!(".ctx-{max_context}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> Result<(), String> {
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if !is_file || name == "config.json" || name.to_string_lossy().starts_with('.') {
                continue;
            }
            link(&entry.path(), &tmp.join(&name))?;
        }
        config["max_position_embeddings"] = max_context.into();
        std::fs::write(tmp.join("config.json"), config.to_string())
            .map_err(|e| format!("{}: {e}", tmp.display()))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    move_into_place(&tmp, &target, "config.json")?;
    Ok(target)
}

fn link(from: &Path, to: &Path) -> Result<(), String> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    #[cfg(unix)]
    let linked = std::os::unix::fs::symlink(from, to);
    #[cfg(windows)]
    let linked = std::os::windows::fs::symlink_file(from, to);
    linked.map_err(|e| format!("cannot link {} into {}: {e}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(window: usize) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pcai-ctx-test-{}-{window}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"max_position_embeddings":{window},"hidden_size":8}}"#),
        )
        .unwrap();
        std::fs::write(dir.join("weights.uqff"), b"weights").unwrap();
        std::fs::write(dir.join(".complete"), b"").unwrap();
        dir
    }

    #[test]
    fn smaller_context_gets_a_linked_folder() {
        let dir = model_dir(4096);
        let variant = folder_for_context(&dir, 512).unwrap();
        assert_eq!(variant, dir.join("ctx-512"));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(variant.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["max_position_embeddings"], 512);
        assert_eq!(config["hidden_size"], 8);
        assert_eq!(
            std::fs::read(variant.join("weights.uqff")).unwrap(),
            b"weights"
        );
        assert!(!variant.join(".complete").exists());
        // A second call finds it.
        assert_eq!(folder_for_context(&dir, 512).unwrap(), variant);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn larger_context_uses_the_model_folder() {
        let dir = model_dir(1024);
        assert_eq!(folder_for_context(&dir, 1024).unwrap(), dir);
        assert_eq!(folder_for_context(&dir, 100_000).unwrap(), dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
