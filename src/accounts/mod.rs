//! The customer domain, free of HTTP and SQL: what makes an email, a password or an API key
//! acceptable. The admin API uses it now; the customer API will use the same rules.

pub mod code;
mod email;
mod key;
mod password;
mod policy;
mod token;

pub use email::{Email, EmailError};
pub use key::{is_well_formed, ApiKeySecret, KEY_PREFIX};
pub use password::{verify_password, Password, PasswordError, PasswordHash};
pub use policy::{KeyPolicy, KeyPolicyInput, PolicyError};
pub use token::{SecretToken, TokenHash, SESSION_PREFIX};
