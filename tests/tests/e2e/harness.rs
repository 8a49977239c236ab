//! The harness itself: a private PostgreSQL starts, answers, holds the CRM schema and goes away.

use maschera_tests::PgServer;

#[tokio::test]
async fn private_postgres_starts_answers_and_is_removed() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema("crm").expect("create the CRM schema");
    let client = pg.connect("crm").await.expect("connect");
    let row = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 7, "the seven CRM tables exist");
    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "the temporary folder is removed on drop");
}
