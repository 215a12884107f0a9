//! The security scheme in a service's OpenAPI document.

use utoipa::openapi::{
    security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    OpenApi,
};

/// Name of the scheme in `components.securitySchemes`.
pub const SCHEME: &str = "bearer";

/// Adds the bearer scheme to `document`, and makes it required by every operation that does
/// not say otherwise when authentication is `enabled` (the document tells what this
/// service, as configured, asks for).
pub fn document(document: &mut OpenApi, enabled: bool) {
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some(
            "`Authorization: Bearer <JWT or API key>` when the service runs with \
             `auth.enabled`. A JWT (HS256, RS256 or ES256) must name the configured `aud` and \
             carry its grant in the `eventpipe` claim: `{\"write\": [client ids], \"read\": \
             [client ids], \"operator\": bool}`, an entry ending in `*` being a prefix. \
             Missing or refused credentials answer 401 with `WWW-Authenticate: Bearer`; \
             client ids or routes outside the grant answer 403.",
        ))
        .build();
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(SCHEME, SecurityScheme::Http(scheme));
    if enabled {
        document.security = Some(vec![SecurityRequirement::new(SCHEME, Vec::<String>::new())]);
    }
}
