-- Internal state of the analytics (schema smsao, not exposed by PostgREST): only the
-- owner's SECURITY DEFINER functions and a DBA touch it. RLS without policies denies
-- anyone else who might be granted access by mistake. The GA4 pseudonym key is here.
alter table smsao.milestones enable row level security;
revoke all on table smsao.milestones from public, anon, authenticated, service_role;
alter table smsao.user_milestones enable row level security;
revoke all on table smsao.user_milestones from public, anon, authenticated, service_role;
alter table smsao.event_counts enable row level security;
revoke all on table smsao.event_counts from public, anon, authenticated, service_role;
alter table smsao.event_firsts enable row level security;
revoke all on table smsao.event_firsts from public, anon, authenticated, service_role;
alter table smsao.business_month_marks enable row level security;
revoke all on table smsao.business_month_marks from public, anon, authenticated, service_role;
alter table smsao.business_months enable row level security;
revoke all on table smsao.business_months from public, anon, authenticated, service_role;
alter table smsao.ga4_settings enable row level security;
revoke all on table smsao.ga4_settings from public, anon, authenticated, service_role;
alter table smsao.ga4_export_events enable row level security;
revoke all on table smsao.ga4_export_events from public, anon, authenticated, service_role;
alter table smsao.ga4_outbox enable row level security;
revoke all on table smsao.ga4_outbox from public, anon, authenticated, service_role;

-- The identity sequences of the analytics tables: Supabase's default privileges grant them
-- to the app roles; identity columns need no sequence privilege.
revoke all on sequence public.credit_prices_id_seq, public.acquisition_spend_id_seq,
  public.business_events_id_seq, smsao.business_month_marks_id_seq,
  smsao.ga4_outbox_id_seq from public, anon, authenticated, service_role;
