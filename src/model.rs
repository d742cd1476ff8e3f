//! The vocabulary shared by the wire, the rules and the database: entity
//! kinds, change kinds and statuses, each one enum with one spelling. On the
//! wire and in SQLite they are the same lower-case text.

/// Declares an enum stored and sent as text: its spellings, `parse`,
/// `as_str`, `Display`, serde and diesel conversions.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::diesel::AsExpression, ::diesel::FromSqlRow)]
        #[diesel(sql_type = ::diesel::sql_types::Text)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the order the contract lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The spellings, for error messages: `a, b, c`.
            pub fn spellings() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    ::serde::de::Error::custom(format!("unknown {} {s:?}; one of {}", stringify!($name), $name::spellings()))
                })
            }
        }

        impl ::diesel::serialize::ToSql<::diesel::sql_types::Text, ::diesel::sqlite::Sqlite> for $name {
            fn to_sql<'b>(&'b self, out: &mut ::diesel::serialize::Output<'b, '_, ::diesel::sqlite::Sqlite>) -> ::diesel::serialize::Result {
                out.set_value(self.as_str());
                Ok(::diesel::serialize::IsNull::No)
            }
        }

        impl ::diesel::deserialize::FromSql<::diesel::sql_types::Text, ::diesel::sqlite::Sqlite> for $name {
            fn from_sql(value: ::diesel::sqlite::SqliteValue<'_, '_, '_>) -> ::diesel::deserialize::Result<Self> {
                let text = <String as ::diesel::deserialize::FromSql<::diesel::sql_types::Text, ::diesel::sqlite::Sqlite>>::from_sql(value)?;
                $name::parse(&text).ok_or_else(|| format!("unknown {} {text:?} in the database", stringify!($name)).into())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// The two kinds of entity.
    Entity { Task = "task", Agent = "agent" }
}

text_enum! {
    /// What a change did to its entity.
    ChangeKind { Created = "created", Updated = "updated", Deleted = "deleted", Noted = "noted" }
}

text_enum! {
    /// Where a task stands.
    TaskStatus {
        Todo = "todo",
        InProgress = "in_progress",
        Blocked = "blocked",
        Review = "review",
        Done = "done",
    }
}

text_enum! {
    /// What an agent is doing. `Offline` is the server's to set: an agent
    /// reports one of the others.
    AgentStatus { Idle = "idle", Busy = "busy", Error = "error", Offline = "offline" }
}

impl AgentStatus {
    /// The statuses an agent may report.
    pub const REPORTED: [AgentStatus; 3] = [AgentStatus::Idle, AgentStatus::Busy, AgentStatus::Error];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in AgentStatus::ALL {
            assert_eq!(AgentStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(TaskStatus::spellings(), "todo, in_progress, blocked, review, done");
        assert_eq!(ChangeKind::parse("updated"), Some(ChangeKind::Updated));
        assert_eq!(Entity::parse("Task"), None);
        assert!(serde_json::from_str::<TaskStatus>("\"doing\"").is_err());
    }
}
