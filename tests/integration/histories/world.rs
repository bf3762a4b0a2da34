//! Two registries on real servers: `plca` serves, `plcb` caches it and
//! has local slices that hold some of the cached nodes and persons (and a
//! local person in some of the cached slices). Every refresh is checked
//! against what `plca` serves at that moment:
//! 1. the refresh is applied, without a warning (no object here competes
//!    for a natural key with another authority's, so nothing may be
//!    skipped);
//! 2. the cache equals what `plca` serves, by `plca`'s ids and natural
//!    keys, memberships included ([`Expected`]);
//! 3. every cached object that `plca` still federates kept its local id
//!    since the previous refresh;
//! 4. the local references to cached objects are still there, unless
//!    `plca` stopped federating the object;
//! 5. after a delta refresh, a full refresh writes nothing;
//! 6. the report's added/updated/deleted counts per class are what the
//!    cache's rows show between before and after.

use std::collections::BTreeMap;

use fedreg::proto::v1 as pb;

use super::ops::{self, Made, Op, Pick, apply_at_peer, refused};
use super::view::{Changes, Class, Expected, Objects, Served, cached};
use crate::common::federation::{peer_one_way, request_refresh, ssh_key, writes};
use crate::common::objects::{get_slice, node, site, slice};
use crate::common::{Backend, TestServer};

/// The two kinds of refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The changes since the checkpoint (RefreshPeer's default).
    Delta,
    /// Everything (`full`).
    Full,
}

/// Objects of the caching registry itself.
#[derive(Debug, Clone)]
pub struct Local {
    /// Its slices `bee_one` and `bee_two`, holding cached nodes and persons.
    pub slices: [i64; 2],
    /// Its person, a member of some cached slices.
    pub person: i64,
}

/// A reference of a local object to an object cached from `plca`, which
/// must survive every refresh while `plca` federates the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ref {
    /// `plca`'s node (its id there) in a local slice.
    ForeignNode { slice: i64, node: i64 },
    /// `plca`'s person in a local slice.
    ForeignPerson { slice: i64, person: i64 },
    /// The local person in `plca`'s slice.
    LocalMember { slice: i64 },
}

impl Ref {
    /// The cached object it refers to.
    fn target(self) -> Served {
        match self {
            Ref::ForeignNode { node, .. } => (Class::Nodes, node),
            Ref::ForeignPerson { person, .. } => (Class::Persons, person),
            Ref::LocalMember { slice } => (Class::Slices, slice),
        }
    }
}

/// The serving registry, the caching one, and what the checks remember.
pub struct World {
    /// `plca`, the authority of the objects.
    pub a: TestServer,
    /// `plcb`, caching `plca`.
    pub b: TestServer,
    /// `plca`'s peer id on `plcb`.
    pub a_on_b: i64,
    /// `plca`'s ids made so far.
    pub made: Made,
    /// `plcb`'s own objects.
    pub local: Local,
    refs: Vec<Ref>,
    /// The cache after the last refresh: `plca`'s ids → local ids.
    last: BTreeMap<Served, i64>,
    refreshes: usize,
}

impl World {
    /// Starts both registries on fresh databases; `plca` gets three sites
    /// (mit, ucb, eth) with persons (ann, bob, cyd, dan), keys, nodes
    /// (n1-n4) and slices (mit_web, ucb_db, eth_exp); `plcb` refreshes
    /// (checked), then its local slices take cached nodes and a cached
    /// person, and its local person joins two cached slices.
    pub async fn start(backend: Backend) -> World {
        // Together: on PostgreSQL, most of a history's time is spent
        // creating and migrating the two databases.
        let (a, b) = tokio::join!(
            TestServer::start_named(backend, "plca"),
            TestServer::start_named(backend, "plcb")
        );
        let a_on_b = peer_one_way(&b, "plcb", &a, "plca").await;
        let made = populate(&a).await;
        let mut api_b = b.registry().await;
        let bee = site(&mut api_b, "bee").await;
        let slices = [
            slice(&mut api_b, "bee_one").await,
            slice(&mut api_b, "bee_two").await,
        ];
        let person = api_b
            .create_person(pb::CreatePersonRequest {
                email: "zed@b.example.org".into(),
                first_name: "Zed".into(),
                last_name: "B".into(),
                enabled: Some(true),
                ..Default::default()
            })
            .await
            .expect("local person")
            .into_inner()
            .person_id;
        api_b
            .add_person_to_site(pb::PersonSiteRequest {
                person_id: person,
                site_id: bee,
                is_primary: true,
            })
            .await
            .expect("local person at the local site");
        let mut world = World {
            a,
            b,
            a_on_b,
            made,
            local: Local { slices, person },
            refs: Vec::new(),
            last: BTreeMap::new(),
            refreshes: 0,
        };
        if let Err(problems) = world.refresh(Kind::Full).await {
            panic!("the first refresh of the initial objects: {problems}");
        }
        let [one, two] = world.local.slices;
        let (persons, nodes, slices) = (&world.made.persons, &world.made.nodes, &world.made.slices);
        let links = [
            Ref::ForeignNode {
                slice: one,
                node: nodes[0],
            },
            Ref::ForeignNode {
                slice: one,
                node: nodes[1],
            },
            Ref::ForeignNode {
                slice: two,
                node: nodes[2],
            },
            Ref::ForeignNode {
                slice: two,
                node: nodes[3],
            },
            Ref::ForeignPerson {
                slice: one,
                person: persons[0],
            },
            Ref::LocalMember { slice: slices[0] },
            Ref::LocalMember { slice: slices[1] },
        ];
        for link in links {
            world.link(link).await.expect("initial local references");
        }
        world
    }

    /// Stops both servers (their databases go with them).
    pub async fn stop(mut self) {
        self.a.stop().await;
        self.b.stop().await;
    }

    /// One step of a history: an admin change at `plca` or `plcb`
    /// (skipped when refused), or a refresh, checked.
    pub async fn step(&mut self, op: &Op) -> Result<(), String> {
        let mut api = self.a.registry().await;
        match apply_at_peer(&mut api, &mut self.made, op).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(status) if refused(&status) => return Ok(()),
            Err(status) => return Err(format!("plca failed {op:?}: {status:?}")),
        }
        let cached_of = |class: Class, pick: Pick| {
            let ids: Vec<i64> = self
                .last
                .keys()
                .filter(|(c, _)| *c == class)
                .map(|&(_, id)| id)
                .collect();
            ops::pick(&ids, pick)
        };
        let local_slice = |i: u8| self.local.slices[usize::from(i) % 2];
        let link = match *op {
            Op::Refresh => return self.refresh_next().await.map(drop),
            Op::LinkNode {
                local_slice: s,
                node,
            } => cached_of(Class::Nodes, node).map(|node| Ref::ForeignNode {
                slice: local_slice(s),
                node,
            }),
            Op::LinkPerson {
                local_slice: s,
                person,
            } => cached_of(Class::Persons, person).map(|person| Ref::ForeignPerson {
                slice: local_slice(s),
                person,
            }),
            Op::JoinSlice { slice } => {
                cached_of(Class::Slices, slice).map(|slice| Ref::LocalMember { slice })
            }
            _ => unreachable!("{op:?} is plca's"),
        };
        match link {
            Some(link) => self.link(link).await,
            None => Ok(()),
        }
    }

    /// The next refresh of the alternation: delta after full, full after
    /// delta.
    pub async fn refresh_next(&mut self) -> Result<pb::RefreshReport, String> {
        let kind = match self.refreshes % 2 {
            1 => Kind::Delta,
            _ => Kind::Full,
        };
        self.refresh(kind).await
    }

    /// The local id of `plca`'s object after the last refresh.
    pub fn cached_id(&self, object: Served) -> Option<i64> {
        self.last.get(&object).copied()
    }

    /// `plca`'s ids of the cached nodes in local slice `i`.
    pub async fn nodes_of_local_slice(&self, i: usize) -> Vec<i64> {
        let mut api = self.b.registry().await;
        let slice = get_slice(&mut api, self.local.slices[i])
            .await
            .expect("local slice");
        let mut out: Vec<i64> = self
            .last
            .iter()
            .filter(|((class, _), local)| *class == Class::Nodes && slice.node_ids.contains(local))
            .map(|(&(_, id), _)| id)
            .collect();
        out.sort_unstable();
        out
    }

    /// Makes a local object refer to a cached one at `plcb`.
    async fn link(&mut self, link: Ref) -> Result<(), String> {
        let Some(&target) = self.last.get(&link.target()) else {
            return Ok(());
        };
        let mut api = self.b.registry().await;
        let result = match link {
            Ref::ForeignNode { slice, .. } => api
                .add_nodes_to_slice(pb::SliceNodesRequest {
                    slice_id: slice,
                    node_ids: vec![target],
                })
                .await
                .map(drop),
            Ref::ForeignPerson { slice, .. } => api
                .add_person_to_slice(pb::SlicePersonRequest {
                    slice_id: slice,
                    person_id: target,
                })
                .await
                .map(drop),
            Ref::LocalMember { .. } => api
                .add_person_to_slice(pb::SlicePersonRequest {
                    slice_id: target,
                    person_id: self.local.person,
                })
                .await
                .map(drop),
        };
        match result {
            Ok(()) => {
                if !self.refs.contains(&link) {
                    self.refs.push(link);
                }
                Ok(())
            }
            Err(status) if refused(&status) => Ok(()),
            Err(status) => Err(format!("plcb failed {link:?}: {status:?}")),
        }
    }

    /// Refreshes `plca` on `plcb` and checks the cache (see the module's
    /// doc); `Err` lists every problem found.
    pub async fn refresh(&mut self, kind: Kind) -> Result<pb::RefreshReport, String> {
        self.refreshes += 1;
        let context = format!("{kind:?} refresh #{}", self.refreshes);
        let result = self.refresh_and_check(kind).await;
        result.map_err(|problems| format!("{context}:\n  {}", problems.join("\n  ")))
    }

    async fn refresh_and_check(&mut self, kind: Kind) -> Result<pb::RefreshReport, Vec<String>> {
        let before = Objects::read(&self.b, pb::Scope::Foreign).await;
        let report = self.request(kind).await.map_err(|e| vec![e])?;
        let mut problems = warnings(&report);
        let after = Objects::read(&self.b, pb::Scope::Foreign).await;
        let expected = Expected::of(&Objects::read(&self.a, pb::Scope::Local).await);

        for (class, seen) in after.changes_since(&before) {
            let reported = Changes::reported(&report, class);
            if reported != seen {
                problems.push(format!(
                    "{} counts: reported {reported:?}, the cache's rows changed by {seen:?}",
                    class.name()
                ));
            }
        }
        problems.extend(expected.differences(&cached(&after)));
        let now = after.local_ids();
        for (object, old) in &self.last {
            if let Some(new) = now.get(object).filter(|new| *new != old) {
                problems.push(format!(
                    "{} #{} changed local id: {old} -> {new}",
                    object.0.name(),
                    object.1
                ));
            }
        }
        problems.extend(self.lost_references(&expected, &after, &now).await);

        if kind == Kind::Delta {
            match self.request(Kind::Full).await {
                Err(e) => problems.push(format!("the full refresh after the delta: {e}")),
                Ok(full) if writes(&full) != 0 => {
                    problems.push(format!(
                        "a full refresh right after the delta wrote {}: {:?} {:?}",
                        writes(&full),
                        full.classes,
                        full.relations
                    ));
                    let repaired = Objects::read(&self.b, pb::Scope::Foreign).await;
                    for problem in expected.differences(&cached(&repaired)) {
                        problems.push(format!("after that full refresh: {problem}"));
                    }
                }
                Ok(_) => {}
            }
        }
        self.refs.retain(|r| expected.federates(r.target()));
        self.last = now;
        match problems.is_empty() {
            true => Ok(report),
            false => Err(problems),
        }
    }

    /// Local references to objects `plca` still federates that the cache
    /// no longer has.
    async fn lost_references(
        &self,
        expected: &Expected,
        after: &Objects,
        now: &BTreeMap<Served, i64>,
    ) -> Vec<String> {
        let mut api = self.b.registry().await;
        let mut local_slices = BTreeMap::new();
        for id in self.local.slices {
            local_slices.insert(id, get_slice(&mut api, id).await.expect("local slice"));
        }
        let mut out = Vec::new();
        for &link in self.refs.iter().filter(|r| expected.federates(r.target())) {
            let Some(&target) = now.get(&link.target()) else {
                out.push(format!("{link:?}: the target is not cached"));
                continue;
            };
            let holds = match link {
                Ref::ForeignNode { slice, .. } => local_slices[&slice].node_ids.contains(&target),
                Ref::ForeignPerson { slice, .. } => {
                    local_slices[&slice].person_ids.contains(&target)
                }
                Ref::LocalMember { .. } => after
                    .slices
                    .iter()
                    .find(|s| s.slice_id == target)
                    .is_some_and(|s| s.person_ids.contains(&self.local.person)),
            };
            if !holds {
                out.push(format!("{link:?} lost (target cached as {target})"));
            }
        }
        out
    }

    /// Runs a refresh (forced: the mass-delete guard is not under test
    /// here and may refuse a small cache's legitimate deletions); `Err`
    /// unless it was applied.
    async fn request(&self, kind: Kind) -> Result<pb::RefreshReport, String> {
        let report = request_refresh(&self.b, self.a_on_b, true, kind == Kind::Full)
            .await
            .map_err(|status| format!("the refresh failed: {status:?}"))?;
        match report.outcome() {
            pb::RefreshOutcome::Applied => Ok(report),
            outcome => Err(format!(
                "the refresh was not applied: {outcome:?}: {}",
                report.reason
            )),
        }
    }
}

/// The report's warnings, one problem each.
fn warnings(report: &pb::RefreshReport) -> Vec<String> {
    report
        .warnings
        .iter()
        .map(|w| {
            format!(
                "warning: {} #{} {:?} skipped: {}",
                w.class, w.peer_object_id, w.natural_key, w.reason
            )
        })
        .collect()
}

/// `plca`'s initial objects (see [`World::start`]).
async fn populate(a: &TestServer) -> Made {
    use ops::Keyed;
    let mut api = a.registry().await;
    let mut made = Made {
        counter: 1000,
        ..Default::default()
    };
    for n in 0..3 {
        made.sites.push(site(&mut api, &Keyed::Site.key(n)).await);
    }
    // (pool entry, primary site, roles)
    let persons: [(u8, usize, &[i32]); 4] = [
        (0, 0, &[20, 30]),
        (1, 0, &[30]),
        (2, 1, &[30]),
        (3, 2, &[40]),
    ];
    for (n, site_index, roles) in persons {
        let person_id = api
            .create_person(pb::CreatePersonRequest {
                email: Keyed::Person.key(n),
                first_name: "P".into(),
                last_name: format!("{n}"),
                enabled: Some(true),
                ..Default::default()
            })
            .await
            .expect("create person")
            .into_inner()
            .person_id;
        for &role_id in roles {
            api.add_role_to_person(pb::PersonRoleRequest { person_id, role_id })
                .await
                .expect("add role");
        }
        api.add_person_to_site(pb::PersonSiteRequest {
            person_id,
            site_id: made.sites[site_index],
            is_primary: true,
        })
        .await
        .expect("add to site");
        let key = api
            .create_key(pb::CreateKeyRequest {
                person_id,
                key_type: "ssh".into(),
                key: ssh_key(usize::from(n), &format!("k{n}")),
            })
            .await
            .expect("create key")
            .into_inner();
        made.keys.push(key.key_id);
        made.persons.push(person_id);
    }
    api.add_person_to_site(pb::PersonSiteRequest {
        person_id: made.persons[1],
        site_id: made.sites[1],
        is_primary: false,
    })
    .await
    .expect("a second site");
    // n1, n3 at mit; n2 at ucb; n4 at eth.
    for (n, site_index) in [(0, 0), (1, 1), (2, 0), (3, 2)] {
        made.nodes
            .push(node(&mut api, made.sites[site_index], &Keyed::Node.key(n)).await);
    }
    // (name, creator, nodes, persons)
    let slices: [(&str, usize, &[usize], &[usize]); 3] = [
        ("mit_web", 0, &[0, 1], &[0, 1]),
        ("ucb_db", 2, &[1, 3], &[2]),
        ("eth_exp", 3, &[3], &[3]),
    ];
    for (name, creator, nodes, persons) in slices {
        let slice_id = api
            .create_slice(pb::CreateSliceRequest {
                name: name.into(),
                creator_person_id: Some(made.persons[creator]),
                ..Default::default()
            })
            .await
            .expect("create slice")
            .into_inner()
            .slice_id;
        api.add_nodes_to_slice(pb::SliceNodesRequest {
            slice_id,
            node_ids: nodes.iter().map(|&i| made.nodes[i]).collect(),
        })
        .await
        .expect("slice nodes");
        for &i in persons {
            api.add_person_to_slice(pb::SlicePersonRequest {
                slice_id,
                person_id: made.persons[i],
            })
            .await
            .expect("slice person");
        }
        made.slices.push(slice_id);
    }
    made
}
