// The migrations and the SQL functions are embedded at compile time (`sqlx::migrate!`,
// `include_str!` of sql/functions.sql); a new or changed migration must rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=sql");
}
