pub mod bench;
pub mod chat;
pub mod info;
pub mod plan;
pub mod profile;
pub mod run;
pub mod serve;
pub mod tokenize;
