//! The custom resources the kubernetes backend stores its own state in, and their CRD YAML.
//!
//! All kinds are cluster-scoped in group `crd.furynet.io`, version `v1`. Every spec keeps the
//! original datastore key (object names are derived from keys, see [`super::names`]). The IPAM
//! kinds carry the ipam crate's record as a schemaless object (`record`) instead of a mirrored
//! schema: the records use types (IP networks, handle ids) with no schemars support, and a
//! mirror would drift from the crate that owns the format; the ipam crate validates on read.

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Schema of a free-form JSON object kept as is by the API server.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Schema of any JSON value kept as is by the API server.
fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// An IP pool (`ipam/pools/<name>`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.furynet.io",
    version = "v1",
    kind = "IPPool",
    plural = "ippools"
)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// The datastore key this object stores.
    pub key: String,
    /// The pool's network, e.g. `10.244.0.0/16`.
    pub cidr: String,
    /// Prefix length of the blocks handed to nodes.
    pub block_size: u8,
    /// Encapsulation mode (`vxlan`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<String>,
    /// Whether traffic leaving the pool is masqueraded.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// Whether new allocations from the pool are refused.
    #[serde(default)]
    pub disabled: bool,
}

/// A block of addresses (`ipam/blocks/<cidr>`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.furynet.io",
    version = "v1",
    kind = "IPAMBlock",
    plural = "ipamblocks"
)]
pub struct IPAMBlockSpec {
    /// The datastore key this object stores.
    pub key: String,
    /// The ipam crate's `BlockRecord`.
    #[schemars(schema_with = "any_object")]
    pub record: serde_json::Value,
}

/// A node's affinity to a block (`ipam/affinity/<node>/<cidr>`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.furynet.io",
    version = "v1",
    kind = "BlockAffinity",
    plural = "blockaffinities"
)]
pub struct BlockAffinitySpec {
    /// The datastore key this object stores.
    pub key: String,
    /// The ipam crate's `AffinityRecord`.
    #[schemars(schema_with = "any_object")]
    pub record: serde_json::Value,
}

/// An allocation handle (`ipam/handles/<id>`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.furynet.io",
    version = "v1",
    kind = "IPAMHandle",
    plural = "ipamhandles"
)]
pub struct IPAMHandleSpec {
    /// The datastore key this object stores.
    pub key: String,
    /// The ipam crate's `HandleRecord`.
    #[schemars(schema_with = "any_object")]
    pub record: serde_json::Value,
}

/// Any other key (e.g. `agents/<node>`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.furynet.io",
    version = "v1",
    kind = "DatastoreEntry",
    plural = "datastoreentries"
)]
pub struct DatastoreEntrySpec {
    /// The datastore key this object stores.
    pub key: String,
    /// The stored value when it is UTF-8 text (usually JSON), as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub value: Option<serde_json::Value>,
    /// The stored value when it is not UTF-8, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// Every CRD, in a fixed order.
fn definitions(
) -> [k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition; 5]
{
    [
        IPPool::crd(),
        IPAMBlock::crd(),
        BlockAffinity::crd(),
        IPAMHandle::crd(),
        DatastoreEntry::crd(),
    ]
}

/// Create the CRDs through the API (those that exist already are left as they are): what
/// `kubectl apply -k deploy/crds` does, for tests and tools.
pub async fn install(client: &kube::Client) -> Result<(), kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for crd in definitions() {
        match api.create(&Default::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The CRDs as `(file name, YAML)`, in a fixed order, plus `kustomization.yaml` listing them.
pub fn crds() -> Result<Vec<(String, String)>, serde_yaml_ng::Error> {
    let defs = definitions();
    let mut files = Vec::new();
    let mut kustomization = String::from(
        "# Generated by `cargo run -p furynet-datastore --example gen-crds -- deploy/crds`.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for crd in defs {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let file = format!("{name}.yaml");
        let yaml = serde_yaml_ng::to_string(&crd)?;
        kustomization.push_str(&format!("  - {file}\n"));
        files.push((
            file,
            format!("# Generated by `cargo run -p furynet-datastore --example gen-crds -- deploy/crds`.\n{yaml}"),
        ));
    }
    files.push(("kustomization.yaml".to_string(), kustomization));
    Ok(files)
}
