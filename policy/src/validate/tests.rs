//! Parsing and validation of policy files: every error names its line and column and what would be right.

use super::*;

/// Parses `text` and returns the single error as `line:column: message | help`.
fn error_of(text: &str) -> String {
    let errors = Policy::parse("p.toml", text)
        .expect_err("the policy is invalid")
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.file, "p.toml");
    format!(
        "{}:{}: {} | {}",
        e.line,
        e.column,
        e.message,
        e.help.clone().unwrap_or_default()
    )
}

const CONTACTS: &str = "[tables.contacts.columns]\nemail = \"contact\"\nbirth_date = { category = \"identifying\", type = \"date\" }\n";

#[test]
fn a_complete_policy_parses_into_the_model() {
    let text = format!(
        "[settings]\nunlisted_tables = \"pass\"\nattribute_namespace = \"acme\"\n{CONTACTS}\
         [tables.health]\npersonal = \"special_category\"\n\
         [roles.dpo]\nunrestricted = true\n\
         [roles.sales]\ndescription = \"Sales\"\npurpose = \"Selling\"\nlawful_basis = \"Contract\"\nrecipients = [\"Team\"]\n\
         attributes = [\"region\"]\nfunctions = [\"score\"]\n\
         [roles.sales.tables.contacts]\nshow = [\"email\"]\ncolumns = {{ birth_date = \"year\" }}\n\
         filter = \"region = attr('region')\"\nwrites = [\"insert\", \"update\"]\n\
         [roles.sales.tables.health]\ndeny = true\n"
    );
    let policy = Policy::parse("p.toml", &text).unwrap();
    assert_eq!(
        policy.settings,
        Settings {
            unlisted_tables: UnlistedTables::Pass,
            attribute_namespace: "acme".into(),
            cascading_deletes: crate::access::CascadingDeletes::Allow,
        }
    );
    let sales = &policy.roles["sales"];
    assert_eq!(sales.login(), "maschera_sales");
    assert_eq!(sales.purpose.as_deref(), Some("Selling"));
    assert_eq!(sales.functions, ["public.score"]);
    let rule = &sales.rules["contacts"];
    assert_eq!(rule.actions["birth_date"].0, Action::Year);
    assert_eq!(
        rule.filter.as_ref().unwrap().sql,
        "region = (SELECT maschera_private.attribute('acme.region'))"
    );
    assert_eq!(
        rule.writes,
        Writes {
            insert: true,
            update: true,
            delete: false
        }
    );
    assert!(sales.rules["health"].deny);
    assert!(policy.roles["dpo"].unrestricted);
    assert_eq!(
        policy.tables["health"].personal,
        Some(Category::SpecialCategory)
    );
    assert_eq!(
        policy.tables["contacts"].name,
        TableName::new("public", "contacts")
    );
    assert_eq!(
        policy
            .restricted_roles()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["sales"]
    );
}

#[test]
fn toml_syntax_errors_are_located() {
    assert!(
        error_of("[roles.sales\n").starts_with("1:13: not a valid policy file"),
        "{}",
        error_of("[roles.sales\n")
    );
}

#[test]
fn unknown_keys_suggest_the_right_one() {
    let e = error_of("[roles.sales]\ndescripton = \"x\"\n");
    assert!(
        e.starts_with("2:1: unknown key `descripton` | did you mean `description`?"),
        "{e}"
    );
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\nshw = [\"email\"]\n"
    ));
    assert!(
        e.starts_with("5:1: unknown key `shw` | did you mean `show`?"),
        "{e}"
    );
    let e = error_of("[tables.contacts]\nschem = \"crm\"\n");
    assert!(
        e.starts_with("2:1: unknown key `schem` | did you mean `schema`?"),
        "{e}"
    );
    let e = error_of("[settings]\nunlisted = \"deny\"\n");
    assert!(e.starts_with("2:1: unknown key `unlisted`"), "{e}");
    let e = error_of("[rolse.sales]\n");
    assert!(
        e.contains("unknown key `rolse` | did you mean `roles`?"),
        "{e}"
    );
}

#[test]
fn unknown_categories_list_the_valid_ones() {
    let e = error_of("[tables.contacts.columns]\nemail = \"contcat\"\n");
    assert!(
        e.starts_with("2:9: unknown category `contcat` | did you mean `contact`?"),
        "{e}"
    );
    assert!(e.contains("`special_category`"), "{e}");
    let e = error_of("[tables.contacts.columns]\nemail = { category = \"contacts\" }\n");
    assert!(e.starts_with("2:22: unknown category `contacts`"), "{e}");
    let e = error_of("[tables.health]\npersonal = \"health\"\n");
    assert!(e.starts_with("2:12: unknown category `health`"), "{e}");
}

#[test]
fn column_declarations_need_a_category_or_a_type() {
    let e = error_of("[tables.contacts.columns]\nstage = {}\n");
    assert!(
        e.starts_with("2:9: column `stage` declares neither a category nor a type"),
        "{e}"
    );
    let e = error_of("[tables.contacts.columns]\nstage = { typ = \"text\" }\n");
    assert!(
        e.contains("unknown key `typ`") || e.contains("unknown field `typ`"),
        "{e}"
    );
}

#[test]
fn settings_values_are_checked() {
    let e = error_of("[settings]\nunlisted_tables = \"allow\"\n");
    assert!(
        e.starts_with(
            "2:19: unknown value `allow` for unlisted_tables | valid values: `deny`, `read`, `pass`"
        ),
        "{e}"
    );
    let e = error_of("[settings]\nattribute_namespace = \"Maschera.X\"\n");
    assert!(
        e.starts_with("2:23: attribute namespace `Maschera.X` is not a plain identifier"),
        "{e}"
    );
}

#[test]
fn role_names_and_attributes_are_checked() {
    assert!(
        error_of("[roles.Sales]\n").starts_with("1:8: role name `Sales` is not a plain identifier")
    );
    assert!(error_of("[roles.private]\n").starts_with("1:8: role name `private` is reserved"));
    let e = error_of("[roles.sales]\nattributes = [\"region\", \"region\"]\n");
    assert!(
        e.starts_with("2:25: attribute `region` is listed twice"),
        "{e}"
    );
    let e = error_of("[roles.sales]\nattributes = [\"the region\"]\n");
    assert!(
        e.starts_with("2:15: attribute `the region` is not a plain identifier"),
        "{e}"
    );
}

#[test]
fn an_unrestricted_role_takes_no_rules() {
    let e = error_of(&format!(
        "{CONTACTS}[roles.dpo]\nunrestricted = true\n[roles.dpo.tables.contacts]\nshow = [\"email\"]\n"
    ));
    assert!(
        e.starts_with("6:19: role `dpo` is unrestricted and gets no views"),
        "{e}"
    );
}

#[test]
fn rules_must_name_declared_tables_and_columns() {
    let e = error_of(&format!("{CONTACTS}[roles.sales.tables.contact]\n"));
    assert!(
        e.starts_with(
            "4:21: role `sales` has a rule for table `contact`, which [tables] does not declare"
        ),
        "{e}"
    );
    assert!(e.contains("did you mean `contacts`?"), "{e}");
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\nshow = [\"emial\"]\n"
    ));
    assert!(e.starts_with("5:9: column `emial` is not declared in [tables.contacts.columns] | did you mean `email`?"), "{e}");
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\ncolumns = {{ brith_date = \"year\" }}\n"
    ));
    assert!(
        e.starts_with("5:13: column `brith_date` is not declared"),
        "{e}"
    );
    // Whole-table categories need no column list: any name passes here (checked against the database).
    let ok = "[tables.health]\npersonal = \"special_category\"\n[roles.doc.tables.health]\nshow = [\"condition\"]\n";
    assert!(Policy::parse("p.toml", ok).is_ok());
}

#[test]
fn a_column_is_either_shown_or_given_an_action() {
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\nshow = [\"email\"]\ncolumns = {{ email = \"mask.email\" }}\n"
    ));
    assert!(
        e.starts_with("6:13: column `email` is both in `show` and in `columns`"),
        "{e}"
    );
}

#[test]
fn actions_are_parsed_and_checked_against_declared_types() {
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\ncolumns = {{ email = \"mask.lst(4)\" }}\n"
    ));
    assert!(
        e.starts_with(
            "5:21: unknown action `mask.lst(4)` | did you mean `mask.last(4)`? valid actions:"
        ),
        "{e}"
    );
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\ncolumns = {{ birth_date = \"mask.email\" }}\n"
    ));
    assert!(
        e.starts_with(
            "5:26: `mask.email` needs a text column (text, varchar, char), but the column is `date`"
        ),
        "{e}"
    );
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\ncolumns = {{ birth_date = \"bucket(10)\" }}\n"
    ));
    assert!(e.contains("`bucket(10)` needs a numeric column"), "{e}");
}

#[test]
fn filters_are_parsed_with_positions_inside_the_file() {
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales]\nattributes = [\"region\"]\n[roles.sales.tables.contacts]\nfilter = \"region = = 'north'\"\n"
    ));
    assert!(e.starts_with("7:20: row filter does not parse"), "{e}");
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales]\nattributes = [\"region\"]\n[roles.sales.tables.contacts]\nfilter = \"\"\"\nregion IN (\n  SELECT 1 FROM x WHERE region = attr('regoin'))\"\"\"\n"
    ));
    assert!(
        e.starts_with("9:34: attribute `regoin` is not declared by the role"),
        "{e}"
    );
    assert!(e.contains("did you mean `region`?"), "{e}");
}

#[test]
fn writes_and_deny_are_checked() {
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\nwrites = [\"insert\", \"upsert\"]\n"
    ));
    assert!(e.starts_with("5:21: unknown write `upsert` | did you mean `insert`? valid writes: `insert`, `update`, `delete`"), "{e}");
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\ndeny = true\nshow = [\"email\"]\n"
    ));
    assert!(e.contains("denies the table and also gives columns"), "{e}");
}

#[test]
fn table_names_and_schemas_are_checked() {
    let e = error_of("[tables.\"crm.contacts\"]\nschema = \"crm\"\n");
    assert!(
        e.starts_with("2:10: table `crm.contacts` already names its schema"),
        "{e}"
    );
    let e = error_of("[tables.\"maschera_x.t\"]\n");
    assert!(e.starts_with("1:9: schema `maschera_x` is reserved"), "{e}");
    let p = Policy::parse(
        "p.toml",
        "[tables.\"crm.contacts\"]\n[tables.deals]\nschema = \"sales\"\n",
    )
    .unwrap();
    assert_eq!(
        p.tables["crm.contacts"].name,
        TableName::new("crm", "contacts")
    );
    assert_eq!(p.tables["deals"].name, TableName::new("sales", "deals"));
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let text = format!(
        "{CONTACTS}[roles.sales.tables.contacts]\nshow = [\"emial\"]\ncolumns = {{ birth_date = \"yeer\" }}\nwrites = [\"drop\"]\n"
    );
    let errors = Policy::parse("p.toml", &text).unwrap_err();
    assert_eq!(errors.0.len(), 3, "{errors}");
    let shown = errors.to_string();
    assert!(
        shown.contains("p.toml:5:9: error: column `emial`"),
        "{shown}"
    );
    assert!(
        shown.contains("p.toml:6:26: error: unknown action `yeer`"),
        "{shown}"
    );
    assert!(
        shown.contains("p.toml:7:11: error: unknown write `drop`"),
        "{shown}"
    );
}

#[test]
fn the_reference_crm_policy_is_valid() {
    let text = include_str!("../../../examples/crm/policy.toml");
    let policy = Policy::parse("policy.toml", text).unwrap();
    assert_eq!(
        policy.roles.keys().collect::<Vec<_>>(),
        ["analyst", "dpo", "marketing", "sales", "support"]
    );
    assert!(
        policy
            .roles
            .values()
            .all(|r| r.description.is_some() && r.purpose.is_some() && r.lawful_basis.is_some())
    );
}

#[test]
fn the_readme_example_is_valid() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let end = start + readme[start..].find("```").expect("end of the example");
    let policy = Policy::parse("README.md", &readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        policy.roles["sales"].rules["contacts"].actions["tax_code"].0,
        Action::MaskLast(4)
    );
}

#[test]
fn writable_names_masked_columns_of_a_rule_that_writes() {
    let ok = Policy::parse(
        "p.toml",
        &format!(
            "{CONTACTS}[roles.sales.tables.contacts]\nshow = [\"email\"]\ncolumns = {{ birth_date = \"year\" }}\n\
             writes = [\"update\"]\nwritable = [\"birth_date\"]\n"
        ),
    )
    .expect("valid");
    let rule = ok.roles["sales"].rules.values().next().expect("rule");
    assert_eq!(rule.writable, ["birth_date"]);
    let catalog = ok.derived_catalog();
    let access = ok.role_access_by_name("sales", &catalog).expect("sales");
    let Some(crate::access::TableAccess::View(view)) = access.tables.values().next() else {
        panic!("a view");
    };
    assert!(view.column("birth_date").expect("birth_date").writable);
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\nshow = [\"email\"]\nwrites = [\"update\"]\nwritable = [\"email\"]\n"
    ));
    assert!(
        e.contains("`writable` names column `email`, which the rule does not mask"),
        "{e}"
    );
    let e = error_of(&format!(
        "{CONTACTS}[roles.sales.tables.contacts]\ncolumns = {{ birth_date = \"year\" }}\nwritable = [\"birth_date\"]\n"
    ));
    assert!(e.contains("allows no insert or update"), "{e}");
}
