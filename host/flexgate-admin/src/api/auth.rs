//! Authentication and roles. People log in with a name and password (argon2 hashes in a YAML users
//! file) and get a short-lived HS256 JWT; automation uses static tokens, stored only as SHA-256
//! hashes so the tokens file is not a secret. Roles are ordered: a viewer reads, an operator also
//! changes rollouts and resets breakers, an admin also uploads and deletes plugins.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::ApiState;
use super::config::AdminAuthConfig;
use super::error::ApiError;
use super::json::ApiJson;

/// What a caller may do. Ordered: each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also changes rollouts and resets circuit breakers.
    Operator,
    /// Also uploads and deletes plugin versions.
    Admin,
}

impl Role {
    /// `viewer`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Principal {
    /// User or token name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// `user` (JWT) or `token` (static API token).
    pub via: String,
}

impl Principal {
    /// 403 unless the caller's role includes `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role `{}` may not do this; `{}` is required",
                self.role.as_str(),
                needed.as_str()
            )))
        }
    }
}

/// One entry of the users file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// Login name.
    pub name: String,
    /// Argon2 PHC string (`$argon2id$v=19$...`), see [`hash_password`].
    pub password_hash: String,
    /// Role granted at login.
    pub role: Role,
}

/// One entry of the tokens file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Name recorded in the audit log (e.g. `ci-deploy`).
    pub name: String,
    /// Lower-case hex SHA-256 of the token, see [`hash_token`].
    pub sha256: String,
    /// Role of requests bearing the token.
    pub role: Role,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<UserRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenRecord>,
}

/// Why auth could not be set up at startup (missing secret, unreadable files).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(pub String);

/// Everything needed to log in and to check bearer tokens.
#[derive(Clone)]
pub struct AuthSettings {
    secret: Arc<Vec<u8>>,
    users: Arc<HashMap<String, UserRecord>>,
    tokens: Arc<HashMap<String, TokenRecord>>,
    ttl: Duration,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("users", &self.users.len())
            .field("tokens", &self.tokens.len())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Lifetime of a login token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl AuthSettings {
    /// Settings with a JWT secret and no users or tokens. The secret must be at least 32 bytes
    /// (HS256 wants a key as long as its hash).
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<AuthSettings, AuthSetupError> {
        let secret = secret.into();
        if secret.len() < 32 {
            return Err(AuthSetupError(
                "the admin JWT secret must be at least 32 bytes".into(),
            ));
        }
        Ok(AuthSettings {
            secret: Arc::new(secret),
            users: Arc::default(),
            tokens: Arc::default(),
            ttl: DEFAULT_TOKEN_TTL,
        })
    }

    /// Loads the secret from the environment variable and the optional users and tokens files;
    /// fails when the variable is not set (see [`AuthSettings::with_files`] to supply a secret).
    pub fn load(config: &AdminAuthConfig) -> Result<AuthSettings, AuthSetupError> {
        let secret = std::env::var(&config.jwt_secret_env).map_err(|_| {
            AuthSetupError(format!(
                "environment variable {} (admin.auth.jwt_secret_env) is not set",
                config.jwt_secret_env
            ))
        })?;
        AuthSettings::with_files(secret, config)
    }

    /// Settings with `secret` and the users and tokens files named in `config` (if any).
    pub fn with_files(
        secret: impl Into<Vec<u8>>,
        config: &AdminAuthConfig,
    ) -> Result<AuthSettings, AuthSetupError> {
        let mut settings = AuthSettings::new(secret)?;
        if let Some(path) = &config.users_file {
            settings = settings.with_users(parse_users(&read(path)?)?)?;
        }
        if let Some(path) = &config.tokens_file {
            settings = settings.with_tokens(parse_tokens(&read(path)?)?)?;
        }
        Ok(settings)
    }

    /// Replaces the users; refuses duplicate names and malformed hashes.
    pub fn with_users(mut self, users: Vec<UserRecord>) -> Result<AuthSettings, AuthSetupError> {
        let mut map = HashMap::new();
        for user in users {
            PasswordHash::new(&user.password_hash).map_err(|e| {
                AuthSetupError(format!("user `{}`: invalid argon2 hash: {e}", user.name))
            })?;
            if map.insert(user.name.clone(), user).is_some() {
                return Err(AuthSetupError(
                    "duplicate user name in the users file".into(),
                ));
            }
        }
        self.users = Arc::new(map);
        Ok(self)
    }

    /// Replaces the static tokens; refuses hashes that are not 64 hex digits.
    pub fn with_tokens(mut self, tokens: Vec<TokenRecord>) -> Result<AuthSettings, AuthSetupError> {
        let mut map = HashMap::new();
        for token in tokens {
            let sha = token.sha256.to_ascii_lowercase();
            if sha.len() != 64 || hex::decode(&sha).is_err() {
                return Err(AuthSetupError(format!(
                    "token `{}`: sha256 must be 64 hex digits",
                    token.name
                )));
            }
            map.insert(sha, token);
        }
        self.tokens = Arc::new(map);
        Ok(self)
    }

    /// Changes the login token lifetime.
    pub fn with_ttl(mut self, ttl: Duration) -> AuthSettings {
        self.ttl = ttl;
        self
    }

    /// Issues a JWT for `name` with `role`; returns it and its lifetime in seconds.
    pub fn issue(&self, name: &str, role: Role) -> Result<(String, u64), ApiError> {
        let exp = now_secs() + self.ttl.as_secs();
        let claims = Claims {
            sub: name.to_owned(),
            role,
            exp,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(ApiError::internal)?;
        Ok((token, self.ttl.as_secs()))
    }

    /// The caller behind a bearer token: a static token, else a valid unexpired JWT.
    pub fn authenticate(&self, bearer: &str) -> Option<Principal> {
        if let Some(token) = self.tokens.get(&hash_token(bearer)) {
            return Some(Principal {
                name: token.name.clone(),
                role: token.role,
                via: "token".into(),
            });
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(
            bearer,
            &DecodingKey::from_secret(&self.secret),
            &validation,
        )
        .ok()?;
        Some(Principal {
            name: data.claims.sub,
            role: data.claims.role,
            via: "user".into(),
        })
    }

    /// Checks a password; slow on purpose (argon2), so run it off the async threads.
    fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let argon = Argon2::default();
        match self.users.get(name) {
            Some(user) => {
                let hash = PasswordHash::new(&user.password_hash).ok()?;
                argon
                    .verify_password(password.as_bytes(), &hash)
                    .ok()
                    .map(|()| user.role)
            }
            None => {
                // Spend the same time for an unknown name as for a wrong password.
                if let Some(hash) = self
                    .users
                    .values()
                    .next()
                    .and_then(|u| PasswordHash::new(&u.password_hash).ok())
                {
                    let _ = argon.verify_password(password.as_bytes(), &hash);
                }
                None
            }
        }
    }
}

fn read(path: &Path) -> Result<String, AuthSetupError> {
    std::fs::read_to_string(path)
        .map_err(|e| AuthSetupError(format!("cannot read {}: {e}", path.display())))
}

/// Parses a users file: `users: [{name, password_hash, role}]`.
pub fn parse_users(yaml: &str) -> Result<Vec<UserRecord>, AuthSetupError> {
    serde_yaml::from_str::<UsersFile>(yaml)
        .map(|f| f.users)
        .map_err(|e| AuthSetupError(format!("users file: {e}")))
}

/// Parses a tokens file: `tokens: [{name, sha256, role}]`.
pub fn parse_tokens(yaml: &str) -> Result<Vec<TokenRecord>, AuthSetupError> {
    serde_yaml::from_str::<TokensFile>(yaml)
        .map(|f| f.tokens)
        .map_err(|e| AuthSetupError(format!("tokens file: {e}")))
}

/// An argon2id PHC string for a users file (for a `hash-password` CLI command).
pub fn hash_password(password: &str) -> Result<String, AuthSetupError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthSetupError(e.to_string()))
}

/// A fresh random 32-byte JWT secret from the OS generator, for when none is configured.
pub fn random_secret() -> Vec<u8> {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut secret = vec![0u8; 32];
    OsRng.fill_bytes(&mut secret);
    secret
}

/// The SHA-256 hex of a static token, as stored in the tokens file.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    exp: u64,
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer <token>` header")
        })?;
        let text = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let token = match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(ApiError::unauthorized(
                    "expected `Authorization: Bearer <token>`",
                ));
            }
        };
        state
            .auth()
            .authenticate(token)
            .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))
    }
}

/// `POST /api/auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A login token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The role it carries.
    pub role: Role,
}

/// Exchange a user name and password for a bearer token.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 401, description = "Wrong name or password", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Not JSON", body = super::error::ErrorBody),
        (status = 422, description = "Unknown or missing fields", body = super::error::ErrorBody),
    ))]
pub async fn login(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let auth = state.auth().clone();
    let name = req.username.clone();
    let role = tokio::task::spawn_blocking(move || auth.verify(&req.username, &req.password))
        .await
        .map_err(ApiError::internal)?;
    let Some(role) = role else {
        tracing::info!(user = %name, "admin login refused");
        return Err(ApiError::unauthorized("wrong user name or password"));
    };
    let (token, expires_in) = state.auth().issue(&name, role)?;
    Ok(Json(LoginResponse {
        token,
        token_type: "Bearer".into(),
        expires_in,
        role,
    }))
}

/// The caller's identity (lets the UI show the name and hide what the role may not do).
#[utoipa::path(get, path = "/api/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Principal),
        (status = 401, description = "Not authenticated", body = super::error::ErrorBody),
    ))]
pub async fn me(principal: Principal) -> Json<Principal> {
    Json(principal)
}
