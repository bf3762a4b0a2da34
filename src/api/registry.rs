//! `fedreg.v1.RegistryService`: the admin API of local objects.

use crate::proto::v1 as pb;
use crate::proto::v1::registry_service_server::RegistryService;
use crate::registry::{keys, nodes, persons, sites, slices};
use crate::store::Store;

use super::delegate_service;

/// Serves the registry's objects to admins.
#[derive(Clone)]
pub struct RegistryApi {
    store: Store,
}

impl RegistryApi {
    /// A service over `store`.
    pub fn new(store: Store) -> RegistryApi {
        RegistryApi { store }
    }
}

delegate_service!(RegistryApi, RegistryService {
    create_site(pb::CreateSiteRequest) -> pb::Site => sites::create;
    get_site(pb::GetSiteRequest) -> pb::Site => sites::get;
    list_sites(pb::ListRequest) -> pb::ListSitesResponse => sites::list;
    update_site(pb::UpdateSiteRequest) -> pb::Site => sites::update;
    delete_site(pb::DeleteRequest) -> pb::DeleteResponse => sites::delete;
    create_person(pb::CreatePersonRequest) -> pb::Person => persons::create;
    get_person(pb::GetPersonRequest) -> pb::Person => persons::get;
    list_persons(pb::ListRequest) -> pb::ListPersonsResponse => persons::list;
    update_person(pb::UpdatePersonRequest) -> pb::Person => persons::update;
    delete_person(pb::DeleteRequest) -> pb::DeleteResponse => persons::delete;
    create_key(pb::CreateKeyRequest) -> pb::Key => keys::create;
    get_key(pb::GetKeyRequest) -> pb::Key => keys::get;
    list_keys(pb::ListRequest) -> pb::ListKeysResponse => keys::list;
    update_key(pb::UpdateKeyRequest) -> pb::Key => keys::update;
    delete_key(pb::DeleteRequest) -> pb::DeleteResponse => keys::delete;
    add_person_to_site(pb::PersonSiteRequest) -> pb::Person => persons::add_to_site;
    remove_person_from_site(pb::PersonSiteRequest) -> pb::Person => persons::remove_from_site;
    add_role_to_person(pb::PersonRoleRequest) -> pb::Person => persons::add_role;
    remove_role_from_person(pb::PersonRoleRequest) -> pb::Person => persons::remove_role;

    create_node(pb::CreateNodeRequest) -> pb::Node => nodes::create;
    get_node(pb::GetNodeRequest) -> pb::Node => nodes::get;
    list_nodes(pb::ListRequest) -> pb::ListNodesResponse => nodes::list;
    update_node(pb::UpdateNodeRequest) -> pb::Node => nodes::update;
    delete_node(pb::DeleteRequest) -> pb::DeleteResponse => nodes::delete;

    create_slice(pb::CreateSliceRequest) -> pb::Slice => slices::create;
    get_slice(pb::GetSliceRequest) -> pb::Slice => slices::get;
    list_slices(pb::ListRequest) -> pb::ListSlicesResponse => slices::list;
    update_slice(pb::UpdateSliceRequest) -> pb::Slice => slices::update;
    delete_slice(pb::DeleteRequest) -> pb::DeleteResponse => slices::delete;

    add_person_to_slice(pb::SlicePersonRequest) -> pb::Slice => slices::add_person;
    remove_person_from_slice(pb::SlicePersonRequest) -> pb::Slice => slices::remove_person;
    add_nodes_to_slice(pb::SliceNodesRequest) -> pb::Slice => slices::add_nodes;
    remove_nodes_from_slice(pb::SliceNodesRequest) -> pb::Slice => slices::remove_nodes;
    add_slice_to_node_whitelist(pb::NodeWhitelistRequest) -> pb::Node => nodes::add_slice_to_whitelist;
    remove_slice_from_node_whitelist(pb::NodeWhitelistRequest) -> pb::Node => nodes::remove_slice_from_whitelist;
});
