//! Token-endpoint wire shapes, as the `oauth2` crate's generic parameters.

use std::fmt;

use oauth2::basic::{
    BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    EndpointNotSet, EndpointSet, ErrorResponse, ExtraTokenFields, StandardRevocableToken,
    StandardTokenResponse,
};
use serde::{Deserialize, Serialize};

/// Fields beyond RFC 6749 in a token success response (`id_token`; `ext_expires_in` is ignored).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

pub(crate) type TokenBody = StandardTokenResponse<IdTokenField, BasicTokenType>;

/// A token-endpoint error body: RFC 6749 fields plus Microsoft's `error_codes` and `suberror`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct TokenErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_codes: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suberror: Option<String>,
}

impl fmt::Display for TokenErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(d) = &self.error_description {
            // The first line only: the rest is trace ids and timestamps.
            write!(f, ": {}", d.lines().next().unwrap_or(""))?;
        }
        Ok(())
    }
}

impl ErrorResponse for TokenErrorBody {}

/// The `oauth2` client with both the authorize and token URLs set.
pub(crate) type OAuthClient = oauth2::Client<
    TokenErrorBody,
    TokenBody,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;
