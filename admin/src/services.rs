//! The services' own settings, loaded the way the services load them (defaults, file, env,
//! no overrides), so the tool sees the shard list, brokers and topics they run with.

use std::path::PathBuf;

use chassis::config::{load, ConfigArgs};

use crate::error::AdminError;

pub struct Configs {
    pub writer: Option<PathBuf>,
    pub query: Option<PathBuf>,
}

impl Configs {
    pub fn writer(&self) -> Result<db_writer::Settings, AdminError> {
        Ok(load("DB_WRITER_", &args(&self.writer))?)
    }

    pub fn query(&self) -> Result<query_service::Settings, AdminError> {
        Ok(load("QUERY_", &args(&self.query))?)
    }
}

fn args(file: &Option<PathBuf>) -> ConfigArgs {
    ConfigArgs {
        config: file.clone(),
        ..ConfigArgs::default()
    }
}
