//! The one rule every key follows: a command-line flag wins over the environment, which wins over
//! the file. Values from the environment are text and are parsed here, so that a bad one is
//! reported with its variable and the key it sets.

use super::{ConfigError, Env, invalid};

/// The environment, over which flags and under which the file sit.
pub(super) struct Layers<'a> {
    env: &'a dyn Env,
}

impl<'a> Layers<'a> {
    /// Layers over `env`.
    pub(super) fn new(env: &'a dyn Env) -> Self {
        Layers { env }
    }

    /// The value of `key`: `flag` if given, else environment variable `var` parsed by `parse`,
    /// else `file`. `None` when none is set (the caller applies the default).
    pub(super) fn get<T>(
        &self,
        key: &str,
        var: &str,
        flag: Option<T>,
        file: Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        if flag.is_some() {
            return Ok(flag);
        }
        if let Some(v) = self.env.get(var) {
            return parse(&v)
                .map(Some)
                .map_err(|why| invalid(key, format!("{var}={v:?} {why}")));
        }
        Ok(file)
    }

    /// An environment variable as it is (for `$CREDENTIALS_DIRECTORY`).
    pub(super) fn var(&self, var: &str) -> Option<String> {
        self.env.get(var)
    }
}

/// Text as it is.
pub(super) fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

/// A whole number.
pub(super) fn whole(v: &str) -> Result<u32, String> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| "is not a whole number".to_string())
}

/// A boolean: `1`/`true`/`on`/`yes` or `0`/`false`/`off`/`no`.
pub(super) fn boolean(v: &str) -> Result<bool, String> {
    match v.trim() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err("is not a boolean (true/false)".to_string()),
    }
}

/// A comma-separated list (empty items dropped).
pub(super) fn list(v: &str) -> Result<Vec<String>, String> {
    Ok(v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn flag_over_environment_over_file_and_bad_environment_names_both() {
        let env: BTreeMap<String, String> = [("V".to_string(), "7".to_string())].into();
        let l = Layers::new(&env);
        assert_eq!(l.get("k", "V", Some(9), Some(1), whole).unwrap(), Some(9));
        assert_eq!(l.get("k", "V", None, Some(1), whole).unwrap(), Some(7));
        assert_eq!(l.get("k", "UNSET", None, Some(1), whole).unwrap(), Some(1));
        assert_eq!(l.get::<u32>("k", "UNSET", None, None, whole).unwrap(), None);
        let bad: BTreeMap<String, String> = [("V".to_string(), "x".to_string())].into();
        let err = Layers::new(&bad)
            .get("a.key", "V", None, Some(1), whole)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `a.key`: V=\"x\" is not a whole number"
        );
    }
}
