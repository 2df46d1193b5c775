//! The field schema of every supported kind, used by the loader to reject unknown fields and
//! wrong types with the exact field path before the typed model is built.

/// The expected type of a field.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// Any scalar, kept as a string.
    Str,
    Bool,
    /// A non-negative integer (scalar that parses as u32).
    Uint,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    StrList,
    /// A mapping of strings to strings.
    StrMap,
    Obj(&'static [Field]),
    List(&'static Ty),
    /// A mapping whose keys are port numbers (1..65535 are checked by validation).
    PortMap(&'static Ty),
    /// Anything (ignored fields such as `status` and server-set metadata).
    Any,
}

pub type Field = (&'static str, Ty);

pub const SELECTOR: &[Field] = &[("matchLabels", Ty::StrMap)];
pub const TARGET_REF: &[Field] = &[("group", Ty::Str), ("kind", Ty::Str), ("name", Ty::Str), ("namespace", Ty::Str)];

pub const SOURCE: &[Field] = &[
    ("principals", Ty::StrList),
    ("notPrincipals", Ty::StrList),
    ("requestPrincipals", Ty::StrList),
    ("notRequestPrincipals", Ty::StrList),
    ("namespaces", Ty::StrList),
    ("notNamespaces", Ty::StrList),
    ("serviceAccounts", Ty::StrList),
    ("notServiceAccounts", Ty::StrList),
    ("trustDomains", Ty::StrList),
    ("notTrustDomains", Ty::StrList),
    ("ipBlocks", Ty::StrList),
    ("notIpBlocks", Ty::StrList),
    ("remoteIpBlocks", Ty::StrList),
    ("notRemoteIpBlocks", Ty::StrList),
];
pub const OPERATION: &[Field] = &[
    ("hosts", Ty::StrList),
    ("notHosts", Ty::StrList),
    ("ports", Ty::StrList),
    ("notPorts", Ty::StrList),
    ("methods", Ty::StrList),
    ("notMethods", Ty::StrList),
    ("paths", Ty::StrList),
    ("notPaths", Ty::StrList),
];
pub const FROM: &[Field] = &[("source", Ty::Obj(SOURCE))];
pub const TO: &[Field] = &[("operation", Ty::Obj(OPERATION))];
pub const CONDITION: &[Field] = &[("key", Ty::Str), ("values", Ty::StrList), ("notValues", Ty::StrList)];
pub const RULE: &[Field] =
    &[("from", Ty::List(&Ty::Obj(FROM))), ("to", Ty::List(&Ty::Obj(TO))), ("when", Ty::List(&Ty::Obj(CONDITION)))];

pub const AUTHORIZATION_POLICY: &[Field] = &[
    ("selector", Ty::Obj(SELECTOR)),
    ("targetRef", Ty::Obj(TARGET_REF)),
    ("targetRefs", Ty::List(&Ty::Obj(TARGET_REF))),
    ("action", Ty::Enum(&["ALLOW", "DENY", "AUDIT", "CUSTOM"])),
    ("provider", Ty::Obj(&[("name", Ty::Str)])),
    ("rules", Ty::List(&Ty::Obj(RULE))),
];

pub const JWT_RULE: &[Field] = &[
    ("issuer", Ty::Str),
    ("audiences", Ty::StrList),
    ("jwksUri", Ty::Str),
    ("jwks", Ty::Str),
    ("fromHeaders", Ty::List(&Ty::Obj(&[("name", Ty::Str), ("prefix", Ty::Str)]))),
    ("fromParams", Ty::StrList),
    ("fromCookies", Ty::StrList),
    ("outputPayloadToHeader", Ty::Str),
    ("forwardOriginalToken", Ty::Bool),
    ("outputClaimToHeaders", Ty::List(&Ty::Obj(&[("header", Ty::Str), ("claim", Ty::Str)]))),
    ("timeout", Ty::Str),
    ("spaceDelimitedClaims", Ty::StrList),
];
pub const REQUEST_AUTHENTICATION: &[Field] = &[
    ("selector", Ty::Obj(SELECTOR)),
    ("targetRef", Ty::Obj(TARGET_REF)),
    ("targetRefs", Ty::List(&Ty::Obj(TARGET_REF))),
    ("jwtRules", Ty::List(&Ty::Obj(JWT_RULE))),
];

const MTLS_MODES: &[&str] = &["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
pub const PEER_MTLS: &[Field] = &[("mode", Ty::Enum(MTLS_MODES))];
pub const PEER_AUTHENTICATION: &[Field] = &[
    ("selector", Ty::Obj(SELECTOR)),
    ("mtls", Ty::Obj(PEER_MTLS)),
    ("portLevelMtls", Ty::PortMap(&Ty::Obj(PEER_MTLS))),
];

pub const ACCESS_RULE: &[Field] = &[
    ("services", Ty::StrList),
    ("hosts", Ty::StrList),
    ("notHosts", Ty::StrList),
    ("paths", Ty::StrList),
    ("notPaths", Ty::StrList),
    ("methods", Ty::StrList),
    ("notMethods", Ty::StrList),
    ("ports", Ty::List(&Ty::Uint)),
    ("notPorts", Ty::List(&Ty::Uint)),
    ("constraints", Ty::List(&Ty::Obj(&[("key", Ty::Str), ("values", Ty::StrList)]))),
];
pub const SERVICE_ROLE: &[Field] = &[("rules", Ty::List(&Ty::Obj(ACCESS_RULE)))];
pub const SUBJECT: &[Field] = &[
    ("user", Ty::Str),
    ("group", Ty::Str),
    ("properties", Ty::StrMap),
    ("names", Ty::StrList),
    ("notNames", Ty::StrList),
    ("groups", Ty::StrList),
    ("notGroups", Ty::StrList),
    ("namespaces", Ty::StrList),
    ("notNamespaces", Ty::StrList),
    ("ips", Ty::StrList),
    ("notIps", Ty::StrList),
];
pub const SERVICE_ROLE_BINDING: &[Field] = &[
    ("subjects", Ty::List(&Ty::Obj(SUBJECT))),
    ("roleRef", Ty::Obj(&[("kind", Ty::Str), ("name", Ty::Str)])),
    ("mode", Ty::Enum(&["ENFORCED", "PERMISSIVE"])),
    ("actions", Ty::List(&Ty::Obj(ACCESS_RULE))),
    ("role", Ty::Str),
];
const RBAC_TARGET: &[Field] = &[("services", Ty::StrList), ("namespaces", Ty::StrList)];
pub const RBAC_CONFIG: &[Field] = &[
    ("mode", Ty::Enum(&["OFF", "ON", "ON_WITH_INCLUSION", "ON_WITH_EXCLUSION"])),
    ("inclusion", Ty::Obj(RBAC_TARGET)),
    ("exclusion", Ty::Obj(RBAC_TARGET)),
    ("enforcementMode", Ty::Enum(&["ENFORCED", "PERMISSIVE"])),
];

const STRING_MATCH: &[Field] = &[("exact", Ty::Str), ("prefix", Ty::Str), ("suffix", Ty::Str), ("regex", Ty::Str)];
const TRIGGER_RULE: &[Field] =
    &[("excludedPaths", Ty::List(&Ty::Obj(STRING_MATCH))), ("includedPaths", Ty::List(&Ty::Obj(STRING_MATCH)))];
pub const LEGACY_JWT: &[Field] = &[
    ("issuer", Ty::Str),
    ("audiences", Ty::StrList),
    ("jwksUri", Ty::Str),
    ("jwks", Ty::Str),
    ("jwtHeaders", Ty::StrList),
    ("jwtParams", Ty::StrList),
    ("triggerRules", Ty::List(&Ty::Obj(TRIGGER_RULE))),
];
const PORT_SELECTOR: &[Field] = &[("number", Ty::Uint), ("name", Ty::Str)];
const TARGET_SELECTOR: &[Field] =
    &[("name", Ty::Str), ("ports", Ty::List(&Ty::Obj(PORT_SELECTOR))), ("labels", Ty::StrMap)];
const MUTUAL_TLS: &[Field] = &[("mode", Ty::Enum(&["STRICT", "PERMISSIVE"])), ("allowTls", Ty::Bool)];
pub const AUTHN_POLICY: &[Field] = &[
    ("targets", Ty::List(&Ty::Obj(TARGET_SELECTOR))),
    ("peers", Ty::List(&Ty::Obj(&[("mtls", Ty::Obj(MUTUAL_TLS)), ("jwt", Ty::Obj(LEGACY_JWT))]))),
    ("peerIsOptional", Ty::Bool),
    ("origins", Ty::List(&Ty::Obj(&[("jwt", Ty::Obj(LEGACY_JWT))]))),
    ("originIsOptional", Ty::Bool),
    ("principalBinding", Ty::Enum(&["USE_PEER", "USE_ORIGIN"])),
];

pub const METADATA: &[Field] = &[
    ("name", Ty::Str),
    ("namespace", Ty::Str),
    ("labels", Ty::StrMap),
    ("annotations", Ty::StrMap),
    ("creationTimestamp", Ty::Str),
    ("generateName", Ty::Any),
    ("uid", Ty::Any),
    ("resourceVersion", Ty::Any),
    ("generation", Ty::Any),
    ("selfLink", Ty::Any),
    ("managedFields", Ty::Any),
    ("ownerReferences", Ty::Any),
    ("finalizers", Ty::Any),
    ("deletionTimestamp", Ty::Any),
    ("deletionGracePeriodSeconds", Ty::Any),
];

/// (group, versions, kind, spec schema) of every supported kind.
pub const KINDS: &[(&str, &[&str], &str, &[Field])] = &[
    ("security.istio.io", &["v1", "v1beta1"], "AuthorizationPolicy", AUTHORIZATION_POLICY),
    ("security.istio.io", &["v1", "v1beta1"], "RequestAuthentication", REQUEST_AUTHENTICATION),
    ("security.istio.io", &["v1", "v1beta1"], "PeerAuthentication", PEER_AUTHENTICATION),
    ("rbac.istio.io", &["v1alpha1"], "ServiceRole", SERVICE_ROLE),
    ("rbac.istio.io", &["v1alpha1"], "ServiceRoleBinding", SERVICE_ROLE_BINDING),
    ("rbac.istio.io", &["v1alpha1"], "ClusterRbacConfig", RBAC_CONFIG),
    ("rbac.istio.io", &["v1alpha1"], "RbacConfig", RBAC_CONFIG),
    ("authentication.istio.io", &["v1alpha1"], "Policy", AUTHN_POLICY),
    ("authentication.istio.io", &["v1alpha1"], "MeshPolicy", AUTHN_POLICY),
];

const BODY_IN_CHECK: &[Field] =
    &[("maxRequestBytes", Ty::Uint), ("allowPartialMessage", Ty::Bool), ("packAsBytes", Ty::Bool)];
pub const EXT_AUTHZ_GRPC: &[Field] = &[
    ("service", Ty::Str),
    ("port", Ty::Uint),
    ("timeout", Ty::Str),
    ("failOpen", Ty::Bool),
    ("clearRouteCache", Ty::Bool),
    ("statusOnError", Ty::Str),
    ("includeRequestBodyInCheck", Ty::Obj(BODY_IN_CHECK)),
];
pub const EXT_AUTHZ_HTTP: &[Field] = &[
    ("service", Ty::Str),
    ("port", Ty::Uint),
    ("timeout", Ty::Str),
    ("pathPrefix", Ty::Str),
    ("failOpen", Ty::Bool),
    ("clearRouteCache", Ty::Bool),
    ("statusOnError", Ty::Str),
    ("includeHeadersInCheck", Ty::StrList),
    ("includeRequestHeadersInCheck", Ty::StrList),
    ("includeAdditionalHeadersInCheck", Ty::StrMap),
    ("includeRequestBodyInCheck", Ty::Obj(BODY_IN_CHECK)),
    ("headersToUpstreamOnAllow", Ty::StrList),
    ("headersToDownstreamOnDeny", Ty::StrList),
    ("headersToDownstreamOnAllow", Ty::StrList),
];
