create trigger sms_configurations_touch_updated_at
  before update on public.sms_configurations
  for each row execute function smsao.touch_updated_at();

create trigger contacts_touch_updated_at
  before update on public.contacts
  for each row execute function smsao.touch_updated_at();

create trigger campaigns_touch_updated_at
  before update on public.campaigns
  for each row execute function smsao.touch_updated_at();
