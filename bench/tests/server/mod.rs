//! A taskwire server in this test process, on port 0 with a fresh database,
//! for the generator to run against.

use std::net::SocketAddr;

pub struct Server {
    pub addr: SocketAddr,
    pub admin: String,
    /// Holds the database folder; its parent is on the same disk, for `--db-dir`.
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), taskwire::StartError>>>,
}

pub fn start() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = "tw_test_admin_token".to_string();
    let config = taskwire::Config {
        db_path: dir
            .path()
            .join("data")
            .join("taskwire.db")
            .to_string_lossy()
            .into_owned(),
        admin_token: Some(admin.clone()),
        ..taskwire::Config::default()
    };
    let listener = taskwire::bind("127.0.0.1:0".parse().unwrap()).expect("bind port 0");
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(taskwire::run(listener, config, async move {
            let _ = stopped.await;
        }))
    });
    Server {
        addr,
        admin,
        dir,
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("server ran");
        }
    }
}
