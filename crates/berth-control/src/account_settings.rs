//! ECS account settings: per principal, with an account default (the root's) and AWS's
//! defaults underneath.
//!
//! Those that change berth: `containerInsights` is the setting new clusters get when
//! CreateCluster gives none; `*LongArnFormat` can no longer be turned off in ECS (berth
//! only has long ARNs). The rest are kept and returned.

use std::sync::Arc;

use berth_core::Error;
use berth_store::{ReadExt, Txn};
use serde::{Deserialize, Serialize};

use crate::paging::{page_size, Page, PageRequest};
use crate::{keys, store_failure, with_retries, Ctx};

/// One setting: (name, allowed values, AWS's default).
const SETTINGS: &[(&str, &[&str], &str)] = &[
    ("serviceLongArnFormat", &["enabled"], "enabled"),
    ("taskLongArnFormat", &["enabled"], "enabled"),
    ("containerInstanceLongArnFormat", &["enabled"], "enabled"),
    ("awsvpcTrunking", &["enabled", "disabled"], "disabled"),
    (
        "containerInsights",
        &["enabled", "disabled", "enhanced"],
        "disabled",
    ),
    ("fargateFIPSMode", &["enabled", "disabled"], "disabled"),
    ("tagResourceAuthorization", &["on", "off"], "on"),
    ("fargateTaskRetirementWaitPeriod", &["0", "7", "14"], "7"),
    ("guardDutyActivate", &["on", "off"], "off"),
    (
        "defaultLogDriverMode",
        &["blocking", "non-blocking"],
        "non-blocking",
    ),
    ("fargateEventWindows", &["enabled", "disabled"], "disabled"),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub value: String,
    pub principal_arn: String,
    /// `user` (set through the API) or `aws_managed`.
    pub user_set: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    value: String,
}

fn definition(
    name: &str,
) -> Result<&'static (&'static str, &'static [&'static str], &'static str), Error> {
    SETTINGS
        .iter()
        .find(|(n, ..)| *n == name)
        .ok_or_else(|| Error::invalid(format!("Invalid account setting name '{name}'.")))
}

fn check_value(name: &str, value: &str) -> Result<(), Error> {
    let (_, allowed, _) = definition(name)?;
    if name.ends_with("LongArnFormat") && value == "disabled" {
        return Err(Error::invalid(format!(
            "The {name} setting can no longer be disabled: ECS uses the long ARN format for every resource."
        )));
    }
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Invalid value '{value}' for account setting {name}. Valid values: {}.",
            allowed.join(", ")
        )))
    }
}

pub struct AccountSettings {
    ctx: Arc<Ctx>,
}

impl AccountSettings {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    /// The account's root principal (the caller until berth authenticates callers).
    pub fn root(&self) -> String {
        self.ctx.arns.account_root()
    }

    fn key(principal: &str, name: &str) -> String {
        keys::account_setting(principal, name)
    }

    async fn stored(&self, principal: &str, name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .ctx
            .store
            .get_json::<Stored>(&Self::key(principal, name))
            .await
            .map_err(store_failure)?
            .map(|(s, _)| s.value))
    }

    /// The setting as it applies to `principal`: its own, else the account default, else
    /// AWS's.
    pub async fn effective(&self, principal: &str, name: &str) -> Result<Setting, Error> {
        let (_, _, aws_default) = definition(name)?;
        if let Some(value) = self.stored(principal, name).await? {
            return Ok(Setting {
                name: name.into(),
                value,
                principal_arn: principal.into(),
                user_set: true,
            });
        }
        let root = self.root();
        if let Some(value) = self.stored(&root, name).await? {
            return Ok(Setting {
                name: name.into(),
                value,
                principal_arn: root,
                user_set: true,
            });
        }
        Ok(Setting {
            name: name.into(),
            value: (*aws_default).into(),
            principal_arn: root,
            user_set: false,
        })
    }

    pub async fn put(
        &self,
        principal: Option<&str>,
        name: &str,
        value: &str,
    ) -> Result<Setting, Error> {
        check_value(name, value)?;
        let principal = principal.map_or_else(|| self.root(), str::to_string);
        if name == "fargateTaskRetirementWaitPeriod" && principal != self.root() {
            return Err(Error::invalid(
                "Only the root user can set fargateTaskRetirementWaitPeriod.",
            ));
        }
        let key = Self::key(&principal, name);
        with_retries(|| async {
            self.ctx
                .store
                .commit(Txn::new().put_json(
                    &key,
                    &Stored {
                        value: value.into(),
                    },
                ))
                .await?;
            Ok(())
        })
        .await?;
        Ok(Setting {
            name: name.into(),
            value: value.into(),
            principal_arn: principal,
            user_set: true,
        })
    }

    /// PutAccountSettingDefault: the root's setting, which every principal inherits.
    pub async fn put_default(&self, name: &str, value: &str) -> Result<Setting, Error> {
        self.put(None, name, value).await
    }

    pub async fn delete(&self, principal: Option<&str>, name: &str) -> Result<Setting, Error> {
        definition(name)?;
        let principal = principal.map_or_else(|| self.root(), str::to_string);
        let key = Self::key(&principal, name);
        let before = self.stored(&principal, name).await?;
        let Some(value) = before else {
            return Err(Error::invalid(format!(
                "The account setting {name} is not set for {principal}."
            )));
        };
        with_retries(|| async {
            self.ctx.store.commit(Txn::new().delete(&key)).await?;
            Ok(())
        })
        .await?;
        Ok(Setting {
            name: name.into(),
            value,
            principal_arn: principal,
            user_set: true,
        })
    }

    /// ListAccountSettings: the principal's own settings, or with `effective` every
    /// setting as it applies to the principal.
    pub async fn list(
        &self,
        principal: Option<&str>,
        name: Option<&str>,
        value: Option<&str>,
        effective: bool,
        page: &PageRequest,
    ) -> Result<Page<Setting>, Error> {
        if let Some(n) = name {
            definition(n)?;
        }
        let principal = principal.map_or_else(|| self.root(), str::to_string);
        let mut all = Vec::new();
        for (n, ..) in SETTINGS {
            if name.is_some_and(|want| want != *n) {
                continue;
            }
            let setting = if effective {
                Some(self.effective(&principal, n).await?)
            } else {
                self.stored(&principal, n).await?.map(|v| Setting {
                    name: (*n).into(),
                    value: v,
                    principal_arn: principal.clone(),
                    user_set: true,
                })
            };
            if let Some(s) = setting.filter(|s| value.is_none_or(|v| v == s.value)) {
                all.push(s);
            }
        }
        // Settings are few: page by position.
        let limit = page_size(page, 10)?;
        let start = match page.next_token.as_deref().filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => all
                .iter()
                .position(|s| s.name == t)
                .map(|i| i + 1)
                .ok_or_else(|| Error::invalid("Invalid nextToken."))?,
        };
        let items: Vec<Setting> = all.iter().skip(start).take(limit).cloned().collect();
        let next_token = (start + items.len() < all.len())
            .then(|| items.last().map(|s| s.name.clone()))
            .flatten();
        Ok(Page { items, next_token })
    }
}
