pub mod bench;
pub mod chat;
pub mod info;
pub mod profile;
pub mod run;
pub mod tokenize;
