//! Distinguished names: building the subjects meshca issues, and printing
//! any name the way istiod's logs do (Go's `pkix.Name.String()`: RDNs in
//! reverse order, `CN=...,O=...,L=...`).

use rcgen::{DistinguishedName, DnType};
use x509_parser::oid_registry::{
    OID_X509_COMMON_NAME, OID_X509_COUNTRY_NAME, OID_X509_LOCALITY_NAME, OID_X509_ORGANIZATIONAL_UNIT,
    OID_X509_ORGANIZATION_NAME, OID_X509_SERIALNUMBER, OID_X509_STATE_OR_PROVINCE_NAME, OID_X509_STREET_ADDRESS,
};
use x509_parser::x509::X509Name;

/// Builds a DN whose Go-style rendering lists `parts` in the given order.
/// (Encoding order is the reverse, as Go prints the last RDN first.)
pub fn dn_printed_as(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in parts.iter().rev() {
        if !value.is_empty() {
            dn.push(ty.clone(), *value);
        }
    }
    dn
}

/// Go-style rendering of a parsed name, as istiod prints it.
pub fn to_go_string(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in name.iter_rdn() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let oid = atv.attr_type();
                let key = if *oid == OID_X509_COMMON_NAME {
                    "CN".to_string()
                } else if *oid == OID_X509_ORGANIZATION_NAME {
                    "O".to_string()
                } else if *oid == OID_X509_ORGANIZATIONAL_UNIT {
                    "OU".to_string()
                } else if *oid == OID_X509_LOCALITY_NAME {
                    "L".to_string()
                } else if *oid == OID_X509_STATE_OR_PROVINCE_NAME {
                    "ST".to_string()
                } else if *oid == OID_X509_COUNTRY_NAME {
                    "C".to_string()
                } else if *oid == OID_X509_SERIALNUMBER {
                    "SERIALNUMBER".to_string()
                } else if *oid == OID_X509_STREET_ADDRESS {
                    "STREET".to_string()
                } else {
                    oid.to_id_string()
                };
                let value = match atv.as_str() {
                    Ok(s) => escape(s),
                    Err(_) => format!("#{}", hex::encode(atv.as_slice())),
                };
                format!("{key}={value}")
            })
            .collect();
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let n = s.chars().count();
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_like_istiod() {
        let dn = dn_printed_as(&[
            (DnType::CommonName, "Intermediate CA - A1"),
            (DnType::OrganizationName, "Istio"),
            (DnType::LocalityName, "cluster-A1"),
        ]);
        let key = crate::PrivateKey::generate(crate::KeyKind::EcP256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = dn;
        let cert = params.self_signed(key.key_pair()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        assert_eq!(to_go_string(parsed.subject()), "CN=Intermediate CA - A1,O=Istio,L=cluster-A1");
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
    }
}
