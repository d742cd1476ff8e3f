//! The Python client's tests (`clients/python/tests`, pytest) against this
//! build's binary, so `cargo test` covers the client too. They run in the
//! virtual environment `target/py-venv`, made here on first use (`.ci/run`
//! makes it beforehand so its time shows as a step of its own).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The target directory: the binary is `<target>/<profile>/taskwire`.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_taskwire"));
    bin.parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>/")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The venv's python, with the client installed (editable) from this checkout
/// and its test dependencies. A venv copied along with `target/` from another
/// checkout points at that checkout's sources, so it is reinstalled.
fn venv_python(client: &Path) -> PathBuf {
    let venv = target_dir().join("py-venv");
    let python = venv.join("bin").join("python");
    let ready = python.exists()
        && Command::new(&python)
            .arg("-c")
            .arg(
                "import sys, pytest, pytest_asyncio, taskwire; sys.exit(not taskwire.__file__.startswith(sys.argv[1]))",
            )
            .arg(client.join("src"))
            .output()
            .is_ok_and(|out| out.status.success());
    if !ready {
        if !python.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        }
        let editable = format!("{}[test]", client.display());
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "-e", &editable]));
    }
    python
}

#[test]
fn python_client_tests_pass() {
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients").join("python");
    let python = venv_python(&client);
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&client)
        .env("TASKWIRE_BIN", env!("CARGO_BIN_EXE_taskwire"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run pytest");
    assert!(
        out.status.success(),
        "pytest failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
