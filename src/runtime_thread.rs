//! A current-thread runtime driven by a thread of its own, for work that should queue only
//! behind its own kind: the embedded store's write transactions, the load harness's users.
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Its thread runs until this is dropped, then drops the runtime and whatever tasks it still has.
pub struct RuntimeThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl RuntimeThread {
    /// Starts the thread and waits for its runtime, as long as building one takes.
    pub fn start(name: &str) -> Result<Self, String> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel();
        let runtime_name = name.to_owned();
        // The runtime is built and dropped on its own thread: a runtime dropped inside async code
        // panics, and callers may be async.
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(format!("{runtime_name} runtime: {error}")));
                        return;
                    }
                };
                let _ = ready.send(Ok(runtime.handle().clone()));
                // Its tasks run only while this thread drives the runtime.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|error| format!("{name} thread: {error}"))?;
        let handle = started
            .recv()
            .map_err(|_| format!("{name} thread ended at start"))??;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}
