//! Spool stores that misbehave, for tests of what the gateway does when its spool does.

use docgate_core::store::{ByteStream, ObjectInfo, ObjectStore, ObjectWriter, ReadSeek};

/// A spool that never answers (a frozen S3 server).
#[derive(Debug)]
pub struct Hanging;

#[async_trait::async_trait]
impl ObjectStore for Hanging {
    async fn put(&self, _key: &str) -> std::io::Result<Box<dyn ObjectWriter>> {
        std::future::pending().await
    }
    async fn get(&self, _key: &str, _from: u64, _len: u64) -> std::io::Result<ByteStream> {
        std::future::pending().await
    }
    fn open_blocking(&self, _key: &str, _len: u64) -> std::io::Result<Box<dyn ReadSeek>> {
        Err(std::io::Error::other("hanging"))
    }
    async fn delete(&self, _key: &str) -> std::io::Result<()> {
        std::future::pending().await
    }
    async fn list(&self, _prefix: &str) -> std::io::Result<Vec<ObjectInfo>> {
        std::future::pending().await
    }
}
