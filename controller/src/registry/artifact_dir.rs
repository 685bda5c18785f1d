//! The controller's content-addressed artifact folder: each file is stored once under its sha256,
//! written to a temporary name while it arrives and renamed into place only when complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where artifact bytes live (`DATA/artifacts/<sha256>`).
#[derive(Debug, Clone)]
pub struct ArtifactDir {
    root: PathBuf,
}

/// A file being received: bytes go to a temporary file while being hashed. Dropped without
/// [`ArtifactDir::commit`], it removes its temporary file.
pub struct Upload {
    tmp: PathBuf,
    file: Option<std::fs::File>,
    hasher: Sha256,
    /// The digest, once [`Upload::finish`] has taken it.
    digest: Option<String>,
    pub size: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl ArtifactDir {
    pub fn open(root: &Path) -> std::io::Result<ArtifactDir> {
        std::fs::create_dir_all(root)?;
        // Uploads that were cut off by a crash leave temporary files; they are never referenced.
        for entry in std::fs::read_dir(root)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("upload-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(ArtifactDir {
            root: root.to_path_buf(),
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a stored artifact; `None` for anything that is not a sha256 digest.
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        let is_digest = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        is_digest.then(|| self.root.join(sha256))
    }

    pub fn begin(&self) -> std::io::Result<Upload> {
        let tmp = self
            .root
            .join(format!("upload-{}", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&tmp)?;
        Ok(Upload {
            tmp,
            file: Some(file),
            hasher: Sha256::new(),
            digest: None,
            size: 0,
        })
    }

    /// Moves a finished upload into place under its digest; if the same bytes are already
    /// stored, the upload is dropped instead. Returns the digest.
    pub fn commit(&self, mut upload: Upload) -> std::io::Result<String> {
        upload
            .file
            .as_ref()
            .expect("not committed yet")
            .sync_all()?;
        let sha256 = upload.digest();
        let dest = self.root.join(&sha256);
        if !dest.exists() {
            std::fs::rename(&upload.tmp, &dest)?;
            upload.file = None; // moved into place: nothing to clean up
        }
        Ok(sha256)
    }
}

impl Upload {
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file
            .as_mut()
            .expect("not committed yet")
            .write_all(bytes)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Flushes the temporary file to disk and returns the digest of its bytes; the upload keeps
    /// its temporary file (removed when it is dropped). For a store elsewhere that copies it.
    pub fn finish(&mut self) -> std::io::Result<String> {
        self.file.as_ref().expect("not committed yet").sync_all()?;
        Ok(self.digest())
    }

    fn digest(&mut self) -> String {
        let hasher = &mut self.hasher;
        self.digest
            .get_or_insert_with(|| hex::encode(std::mem::take(hasher).finalize()))
            .clone()
    }

    /// The temporary file, for reading it back before commit.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Throws the upload away.
    pub fn discard(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_are_stored_once_and_discards_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactDir::open(dir.path()).unwrap();
        let mut a = store.begin().unwrap();
        a.write(b"ab").unwrap();
        a.write(b"c").unwrap();
        let sha = store.commit(a).unwrap();
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut b = store.begin().unwrap();
        b.write(b"abc").unwrap();
        assert_eq!(store.commit(b).unwrap(), sha);
        let c = store.begin().unwrap();
        c.discard();
        let mut d = store.begin().unwrap();
        d.write(b"cut off").unwrap();
        drop(d); // a client that went away mid-upload
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(&sha)]);
        assert!(store.path("../x").is_none());
    }
}
