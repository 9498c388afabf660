//! Closed sets stored as `text` in Postgres: one macro gives an enum its string form (for
//! SQL, JSON and messages), `FromStr`, `Display`, and sqlx encoding as `text` / `text[]`, so
//! a value read from or written to the database is always one of the enum's variants.

/// Declares a closed set stored as text (its strings must be the variants' names in
/// snake_case): `text_enum! { /// doc  pub enum Name { /// doc Variant = "variant", ... } }`.
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        // The string forms are the variants' names in snake_case (serde and utoipa read
        // `rename_all`; the test below holds `as_str` to the same strings).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string form shared by SQL and JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} '{}'; use one of {}",
                        stringify!($name),
                        s,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                s.parse().map_err(Into::into)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::runs::create::TriggerType;
    use crate::runs::steps::{Role, StepKind};
    use crate::runs::RunStatus;

    fn same_strings<T>(all: &[T])
    where
        T: serde::Serialize + std::fmt::Display + std::str::FromStr + PartialEq + std::fmt::Debug,
        <T as std::str::FromStr>::Err: std::fmt::Debug,
    {
        for v in all {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json, serde_json::Value::String(v.to_string()), "{v:?}");
            assert_eq!(&v.to_string().parse::<T>().unwrap(), v);
        }
    }

    #[test]
    fn json_sql_and_display_strings_are_the_same() {
        same_strings(RunStatus::ALL);
        same_strings(StepKind::ALL);
        same_strings(Role::ALL);
        same_strings(TriggerType::ALL);
    }

    #[test]
    fn the_openapi_schema_lists_the_same_strings() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(RunStatus::schema()).unwrap();
        let listed: Vec<String> = schema["enum"]
            .as_array()
            .expect("an enum schema")
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let ours: Vec<String> = RunStatus::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(listed, ours);
    }
}
