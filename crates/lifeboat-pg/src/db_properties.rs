//! What a database is beyond its contents: encoding and locale, owner, and `ALTER DATABASE …
//! SET` settings. `pg_dump` writes these only with `--create`, which restores under the original
//! name, so a logical backup records them itself and a restore under any name puts them back.
//!
//! They matter in a recovery: since PostgreSQL 15 the `public` schema belongs to the database's
//! owner, so an application role that owned its database cannot run its migrations in a copy
//! owned by the restoring superuser; a `search_path` set on the database decides which tables
//! unqualified queries (the source's `checks` among them) find; and a database created with the
//! server's default locale sorts text differently from the one it replaces.

use crate::Client;
use crate::error::Result;
use crate::logical::{quote_ident, quote_literal};

/// The properties of one database (see the module docs), as read at backup time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatabaseProperties {
    /// Character set (`UTF8`, `LATIN1`, …).
    pub encoding: String,
    /// `LC_COLLATE`.
    pub collate: String,
    /// `LC_CTYPE`.
    pub ctype: String,
    /// `icu` or `builtin` with its locale; absent for the libc provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<(String, String)>,
    /// Owning role.
    pub owner: String,
    /// `ALTER DATABASE … SET` settings for every role, as PostgreSQL stores them (`name=value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<String>,
    /// Privileges on the database itself, as `aclitem`s (`grantee=privileges/grantor`); absent
    /// when they are PostgreSQL's defaults (`PUBLIC` may connect and create temporary tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<String>>,
    /// `CONNECTION LIMIT`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i64>,
}

/// Reads the properties of `db` (None when the server has no such database).
pub fn read(client: &Client, db: &str) -> Result<Option<DatabaseProperties>> {
    // Through to_jsonb so one query fits every version: the ICU locale column was renamed in
    // PostgreSQL 17 (daticulocale to datlocale), and older servers have no provider column.
    let rows = client.query(&format!(
        "SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, \
         to_jsonb(d)->>'datlocprovider', \
         coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale'), \
         pg_get_userbyid(d.datdba), \
         (SELECT array_to_json(s.setconfig) FROM pg_db_role_setting s \
          WHERE s.setdatabase = d.oid AND s.setrole = 0), \
         array_to_json(d.datacl), d.datconnlimit \
         FROM pg_database d WHERE d.datname = {}",
        quote_literal(db)
    ))?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(None);
    };
    let col = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    let provider = match (col(3).as_str(), col(4)) {
        ("i", l) => Some(("icu".to_string(), l)),
        ("b", l) => Some(("builtin".to_string(), l)),
        _ => None,
    };
    let settings = serde_json::from_str::<Vec<String>>(&col(6)).unwrap_or_default();
    let acl = serde_json::from_str::<Vec<String>>(&col(7)).ok();
    let connection_limit = col(8).parse::<i64>().ok().filter(|l| *l >= 0);
    Ok(Some(DatabaseProperties {
        encoding: col(0),
        collate: col(1),
        ctype: col(2),
        provider,
        owner: col(5),
        settings,
        acl,
        connection_limit,
    }))
}

/// Runs one statement whose refusal is not an error of the restore: None when it ran, else the
/// first line of the server's refusal (for a warning). An unreachable server stays an error.
fn try_execute(admin: &Client, sql: &str) -> Result<Option<String>> {
    match admin.execute(sql) {
        Ok(()) => Ok(None),
        Err(e @ crate::PgError::Connect { .. }) => Err(e),
        Err(e) => Ok(Some(e.to_string().lines().next().unwrap_or_default().to_string())),
    }
}

/// Creates the empty database `name` from `template0` with the recorded encoding and locale.
/// When the server cannot (a locale its operating system lacks), the database is created with
/// the server's defaults and the returned warning says what differs: a recovery goes on.
pub fn create(admin: &Client, name: &str, props: Option<&DatabaseProperties>) -> Result<Option<String>> {
    let plain = format!("CREATE DATABASE {} TEMPLATE template0;", quote_ident(name));
    let Some(p) = props else {
        admin.execute(&plain)?;
        return Ok(None);
    };
    let mut sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(name),
        quote_literal(&p.encoding),
        quote_literal(&p.collate),
        quote_literal(&p.ctype)
    );
    match &p.provider {
        Some((kind, locale)) if kind == "icu" => {
            sql.push_str(&format!(" LOCALE_PROVIDER icu ICU_LOCALE {}", quote_literal(locale)));
        }
        Some((kind, locale)) if kind == "builtin" => {
            sql.push_str(&format!(
                " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                quote_literal(locale)
            ));
        }
        _ => {}
    }
    sql.push(';');
    let Some(why) = try_execute(admin, &sql)? else {
        return Ok(None);
    };
    // The locale is what servers most often lack; the "C" locale exists everywhere and goes
    // with every encoding, and the encoding is what the data needs to load unchanged.
    let c_locale = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C';",
        quote_ident(name),
        quote_literal(&p.encoding)
    );
    let fallback = if admin.execute(&c_locale).is_ok() {
        format!("encoding {} with the \"C\" locale", p.encoding)
    } else {
        admin.execute(&plain)?;
        "the server's default encoding and locale".to_string()
    };
    Ok(Some(format!(
        "{name:?} was created with {fallback}, not the backup's ({} {}/{}{}): {why}",
        p.encoding,
        p.collate,
        p.ctype,
        p.provider
            .as_ref()
            .map(|(k, l)| format!(", {k} {l}"))
            .unwrap_or_default()
    )))
}

/// Puts the recorded `ALTER DATABASE … SET` settings back on the database `name`, then opens a
/// session in it: a setting the server accepts but cannot honour (a preload library it lacks)
/// would otherwise make every new connection fail, so then every setting is removed again and
/// the warning says why. A setting the server refuses (a parameter of an extension it lacks) is
/// skipped with a warning: the data is in place, and a restore does not fail over a setting.
pub fn apply_settings(admin: &Client, name: &str, props: &DatabaseProperties) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let db = quote_ident(name);
    let mut applied = 0;
    for s in &props.settings {
        let Some(sql) = setting_sql(&db, s) else {
            warnings.push(format!(
                "{name:?}: setting {s:?} not restored: not of the form name=value"
            ));
            continue;
        };
        match try_execute(admin, &sql)? {
            None => applied += 1,
            Some(why) => warnings.push(format!("{name:?}: setting {s:?} not restored: {why}")),
        }
    }
    if applied > 0
        && let Err(e) = admin.for_database(name)
    {
        admin.execute(&format!("ALTER DATABASE {db} RESET ALL;"))?;
        warnings.push(format!(
            "{name:?}: its settings were removed again, because new sessions failed with them ({}): {}",
            props.settings.join("; "),
            e.to_string().lines().next().unwrap_or_default()
        ));
    }
    Ok(warnings)
}

/// Puts back who may connect (the database's privileges and connection limit). A database that
/// was closed to `PUBLIC` must not come back open to every role; so `PUBLIC` loses its
/// default privileges first, then each recorded grant is made. A grantee missing here is a
/// warning (the database is then stricter than the original, never looser).
pub fn apply_access(admin: &Client, name: &str, props: &DatabaseProperties) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let db = quote_ident(name);
    let mut statements = Vec::new();
    if let Some(limit) = props.connection_limit {
        statements.push((
            format!("ALTER DATABASE {db} CONNECTION LIMIT {limit};"),
            "connection limit".to_string(),
        ));
    }
    if let Some(acl) = &props.acl {
        statements.push((
            format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC;"),
            "default privileges".into(),
        ));
        for item in acl {
            match grant_sql(&db, item) {
                Some(sqls) => statements.extend(sqls.into_iter().map(|q| (q, format!("grant {item:?}")))),
                None => warnings.push(format!("{name:?}: privilege {item:?} not restored: not an aclitem")),
            }
        }
    }
    for (sql, what) in statements {
        if let Some(why) = try_execute(admin, &sql)? {
            warnings.push(format!("{name:?}: {what} not restored: {why}"));
        }
    }
    Ok(warnings)
}

/// The `GRANT`s of one `aclitem` on a database (`app=Cc*/postgres`: CREATE, and CONNECT with
/// grant option, to `app`; an empty grantee is `PUBLIC`). None when it does not parse.
fn grant_sql(db: &str, item: &str) -> Option<Vec<String>> {
    let (grantee, rest) = item.rsplit_once('/').map(|(g, _)| g).unwrap_or(item).rsplit_once('=')?;
    let grantee = if grantee.is_empty() {
        "PUBLIC".to_string()
    } else if let Some(q) = grantee.strip_prefix('"').and_then(|g| g.strip_suffix('"')) {
        quote_ident(&q.replace("\"\"", "\""))
    } else {
        quote_ident(grantee)
    };
    let mut plain = Vec::new();
    let mut with_option = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        let privilege = match c {
            'C' => "CREATE",
            'T' => "TEMPORARY",
            'c' => "CONNECT",
            _ => return None,
        };
        if chars.peek() == Some(&'*') {
            chars.next();
            with_option.push(privilege);
        } else {
            plain.push(privilege);
        }
    }
    let mut out = Vec::new();
    if !plain.is_empty() {
        out.push(format!("GRANT {} ON DATABASE {db} TO {grantee};", plain.join(", ")));
    }
    if !with_option.is_empty() {
        out.push(format!(
            "GRANT {} ON DATABASE {db} TO {grantee} WITH GRANT OPTION;",
            with_option.join(", ")
        ));
    }
    Some(out)
}

/// Gives the database `name` its recorded owner when that role exists here. Never fails the
/// restore: a role the restoring one may not hand databases to (PostgreSQL 16's `SET` option
/// of role membership) is a warning, and the database keeps the restoring role as owner.
pub fn apply_owner(admin: &Client, name: &str, props: &DatabaseProperties) -> Result<Option<String>> {
    if props.owner.is_empty() {
        return Ok(None);
    }
    let exists = admin.query_value(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname = {}",
        quote_literal(&props.owner)
    ))?;
    if exists.as_deref() != Some("1") {
        return Ok(Some(format!(
            "{name:?}: owner role {:?} does not exist on this server; the database keeps the restoring role as owner",
            props.owner
        )));
    }
    let sql = format!(
        "ALTER DATABASE {} OWNER TO {};",
        quote_ident(name),
        quote_ident(&props.owner)
    );
    Ok(try_execute(admin, &sql)?.map(|why| {
        format!(
            "{name:?}: could not give it to its owner {:?}, so the restoring role keeps it: {why}",
            props.owner
        )
    }))
}

/// Settings PostgreSQL stores as a list (`GUC_LIST_QUOTE`): each element must be its own
/// literal, or `search_path = 'app, public'` would name one schema called "app, public".
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
];

/// `ALTER DATABASE db SET name = value` for one stored `name=value` (None when malformed).
fn setting_sql(db: &str, stored: &str) -> Option<String> {
    let (name, value) = stored.split_once('=')?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return None;
    }
    // Each part quoted: a custom setting may be named with a reserved word (`app.user`).
    let quoted_name = name
        .to_ascii_lowercase()
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".");
    let value = if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        let items = split_list(value);
        if items.is_empty() {
            // An empty list (`search_path = ''`, a hardening choice) is one empty literal.
            quote_literal("")
        } else {
            items.iter().map(|e| quote_literal(e)).collect::<Vec<_>>().join(", ")
        }
    } else {
        quote_literal(value)
    };
    Some(format!("ALTER DATABASE {db} SET {quoted_name} = {value};"))
}

/// Splits a stored list value (`"$user", public`) into its elements, unquoting
/// double-quoted ones (`""` inside them is one quote).
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() || !out.is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_settings_become_one_literal_per_element() {
        assert_eq!(
            setting_sql("\"app\"", "search_path=\"$user\", app_schema, \"Odd, \"\"name\"\"\"").unwrap(),
            "ALTER DATABASE \"app\" SET \"search_path\" = '$user', 'app_schema', 'Odd, \"name\"';"
        );
        assert_eq!(
            setting_sql("\"app\"", "search_path=\"\"").unwrap(),
            "ALTER DATABASE \"app\" SET \"search_path\" = '';"
        );
        assert_eq!(
            setting_sql("\"app\"", "work_mem=64MB").unwrap(),
            "ALTER DATABASE \"app\" SET \"work_mem\" = '64MB';"
        );
        assert_eq!(
            setting_sql("\"app\"", r"app.user=it's a \ test").unwrap(),
            r#"ALTER DATABASE "app" SET "app"."user" = E'it''s a \\ test';"#
        );
        assert_eq!(setting_sql("\"app\"", "no equals sign"), None);
        assert_eq!(setting_sql("\"app\"", "bad name; DROP=1"), None);
    }

    #[test]
    fn aclitems_become_grants() {
        assert_eq!(
            grant_sql("\"d\"", "=Tc/postgres").unwrap(),
            vec!["GRANT TEMPORARY, CONNECT ON DATABASE \"d\" TO PUBLIC;"]
        );
        assert_eq!(
            grant_sql("\"d\"", "\"we ird\"=Cc*/postgres").unwrap(),
            vec![
                "GRANT CREATE ON DATABASE \"d\" TO \"we ird\";",
                "GRANT CONNECT ON DATABASE \"d\" TO \"we ird\" WITH GRANT OPTION;"
            ]
        );
        assert_eq!(grant_sql("\"d\"", "app=/postgres").unwrap(), Vec::<String>::new());
        assert_eq!(grant_sql("\"d\"", "app=X/postgres"), None);
        assert_eq!(grant_sql("\"d\"", "garbage"), None);
    }

    #[test]
    fn old_snapshots_without_properties_still_read() {
        let p: DatabaseProperties =
            serde_json::from_str(r#"{"encoding":"UTF8","collate":"C","ctype":"C","owner":"app"}"#).unwrap();
        assert_eq!(p.settings, Vec::<String>::new());
        assert_eq!(p.provider, None);
    }
}
