//! Running an in-process fake server on loopback until its handle is dropped.

use axum::Router;
use tokio::net::TcpListener;

/// Serves `app` on `listener` until the returned sender is dropped.
pub(crate) fn spawn(listener: TcpListener, app: Router) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    tx
}
